"""The LoRA training loop: PEFT on a transformers causal LM, plain and readable (nanoGPT-style), on CPU or CUDA.

It takes examples and hyperparameters, reports each step's loss and each epoch's train/validation loss through
`TrainHooks`, writes a PEFT adapter checkpoint (safetensors + adapter_config.json) after every epoch, and can resume
from one. It knows nothing of jobs, databases or HTTP: the worker wraps it. Optimizer state is not checkpointed
(a resumed run restarts AdamW's moments at the next epoch, which LoRA tolerates well).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from llmaas.training.dataset import Encoded, batches, encode_all
from llmaas.training.files import Example

BASE_LEARNING_RATE = 2e-4  # × learning_rate_multiplier; a common LoRA rate
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(slots=True)
class TrainConfig:
    n_epochs: int = 3
    batch_size: int = 4
    learning_rate: float = BASE_LEARNING_RATE
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    max_seq_len: int = 1024


class TrainHooks(Protocol):
    def on_step(self, *, step: int, total_steps: int, epoch: int, train_loss: float) -> None: ...

    def on_epoch(
        self, *, epoch: int, step: int, train_loss: float, valid_loss: float | None, checkpoint: Path
    ) -> None: ...

    def should_stop(self) -> bool:
        """Checked between steps: True stops training at once (cancel, lost lease)."""
        ...


class Stopped(Exception):
    """Training stopped between steps because `should_stop()` said so."""


@dataclass(slots=True)
class TrainResult:
    adapter_dir: Path
    trained_tokens: int
    steps: int


# --- loading the base model ---------------------------------------------------------------------------


def pick_dtype(device: str) -> torch.dtype:
    """fp32 on CPU: training needs it, and bf16 matmul is 100x slower on CPUs without native support."""
    return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def load_base(folder: Path, gguf_file: str | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a local HF folder, or a .gguf inside it (dequantized by transformers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": True}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(device), **kw)  # never trust_remote_code
    return model.to(device), tokenizer  # type: ignore[arg-type]  # transformers types .to() as a decorated method


# --- the loop -----------------------------------------------------------------------------------------


def _loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


@torch.no_grad()
def evaluate(model: Any, data: Sequence[Encoded], batch_size: int, pad_id: int, device: str) -> float:
    model.eval()
    total, count = 0.0, 0
    for ids, mask, labels in batches(data, batch_size, pad_id=pad_id):
        n = int((labels[:, 1:] != -100).sum())
        total += float(_loss(model, ids.to(device), mask.to(device), labels.to(device))) * n
        count += n
    model.train()
    return total / max(count, 1)


def train(
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    train_examples: Sequence[Example],
    valid_examples: Sequence[Example] | None,
    out_dir: Path,
    hooks: TrainHooks,
    *,
    resume_from: tuple[int, Path] | None = None,  # (last finished epoch, its checkpoint folder)
    device: str = "cpu",
) -> TrainResult:
    """Fine-tune LoRA adapters on `model` in place; checkpoints land in out_dir/epoch-<n>/."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_data = encode_all(tokenizer, train_examples, config.max_seq_len)
    valid_data = encode_all(tokenizer, valid_examples or [], config.max_seq_len)
    if not train_data:
        raise ValueError("no training example has an assistant answer left after tokenization")

    first_epoch = 1
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in 5.x; nothing to act on here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if resume_from is not None:
            done, ckpt = resume_from
            model = PeftModel.from_pretrained(model, ckpt, is_trainable=True)
            first_epoch = done + 1
        else:
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.target_modules,
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.n_epochs
    step = steps_per_epoch * (first_epoch - 1)
    tokens_per_epoch = sum(len(e.input_ids) for e in train_data)
    checkpoint = resume_from[1] if resume_from else out_dir
    for epoch in range(first_epoch, config.n_epochs + 1):
        running, seen = 0.0, 0
        # Same seed + epoch → same order, so a resumed run sees what an uninterrupted one would have.
        for ids, mask, labels in batches(train_data, config.batch_size, pad_id=pad_id, seed=config.seed * 1000 + epoch):
            if hooks.should_stop():
                raise Stopped()
            loss = _loss(model, ids.to(device), mask.to(device), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            # Linear decay to 10% over the whole run (a warm restart of the schedule on resume is not needed).
            for g in optimizer.param_groups:
                g["lr"] = config.learning_rate * (1.0 - 0.9 * step / max(total_steps, 1))
            optimizer.step()
            step += 1
            running += loss.item()
            seen += 1
            hooks.on_step(step=step, total_steps=total_steps, epoch=epoch, train_loss=loss.item())
        valid_loss = evaluate(model, valid_data, config.batch_size, pad_id, device) if valid_data else None
        checkpoint = out_dir / f"epoch-{epoch}"
        model.save_pretrained(checkpoint, safe_serialization=True)
        hooks.on_epoch(epoch=epoch, step=step, train_loss=running / max(seen, 1), valid_loss=valid_loss, checkpoint=checkpoint)
    return TrainResult(adapter_dir=checkpoint, trained_tokens=tokens_per_epoch * config.n_epochs, steps=step)


class PrintHooks:
    """Hooks for running the trainer by hand: print progress, never stop."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def on_step(self, *, step: int, total_steps: int, epoch: int, train_loss: float) -> None:
        print(f"step {step}/{total_steps} epoch {epoch} loss {train_loss:.4f} ({time.monotonic() - self.t0:.1f}s)")

    def on_epoch(self, *, epoch: int, step: int, train_loss: float, valid_loss: float | None, checkpoint: Path) -> None:
        print(f"epoch {epoch} train {train_loss:.4f} valid {valid_loss} → {checkpoint.name}")

    def should_stop(self) -> bool:
        return False
