"""The LoRA training loop: PEFT on a transformers causal LM, plain and readable (nanoGPT-style), on CPU or CUDA.

It takes rows (chat examples, or DPO preference pairs) and hyperparameters, and reports through `TrainHooks`: each
step's metrics (OpenAI's names: `train_loss`, `train_mean_token_accuracy`, and every `eval_every` steps
`valid_loss` / `valid_mean_token_accuracy` on one validation batch), and each epoch's checkpoint with the whole
validation file's `full_valid_loss` / `full_valid_mean_token_accuracy` (and, when the validation answers are a few
labels, `valid_classification_accuracy` and `valid_confusion_matrix`: `labels.py`). A checkpoint is a PEFT adapter folder
(safetensors + adapter_config.json) plus the optimizer and schedule (`state.py`), so a resumed run continues
exactly where the checkpoint left off. The loss itself is `objectives.py`'s. It knows nothing of jobs, databases or
HTTP: the worker wraps it.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from llmaas.engine.types import LORA_MODULES
from llmaas.training.labels import classification_report, label_set
from llmaas.training.objectives import Objective, make_objective
from llmaas.training.state import load_training_state, save_training_state

BASE_LEARNING_RATE = 2e-4  # × learning_rate_multiplier; a common LoRA rate
DEFAULT_TARGETS = list(LORA_MODULES)


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
    method: str = "supervised"  # or "dpo"
    beta: float = 0.1  # DPO's β: how far the policy may move from the reference
    eval_every: int = 0  # steps between one-batch validations (0 = only the full one at each checkpoint)


Metrics = dict[str, Any]  # numbers, plus a classifier's confusion matrix at checkpoints


class TrainHooks(Protocol):
    def on_step(self, *, step: int, total_steps: int, epoch: int, metrics: Metrics) -> None: ...

    def on_epoch(self, *, epoch: int, step: int, metrics: Metrics, checkpoint: Path) -> None: ...

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


@torch.no_grad()
def evaluate(model: Any, objective: Objective, data: Sequence[Any], batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) over `data`, each batch weighted by what its loss averages over."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for batch in objective.batches(data, batch_size, None):
        m = objective.measure(model, batch)
        total += float(m.loss) * m.count
        correct, count = correct + m.correct, count + m.count
    model.train()
    return total / max(count, 1), correct / max(count, 1)


def linear_decay(total_steps: int) -> Any:
    """The schedule's factor at a step: linear from 1 down to 0.1 over the whole run."""
    return lambda s: 1.0 - 0.9 * s / max(total_steps, 1)


def _attach_lora(model: Any, config: TrainConfig, resume_from: tuple[int, Path] | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in 5.x; nothing to act on here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if resume_from is not None:
            return PeftModel.from_pretrained(model, resume_from[1], is_trainable=True)
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)


def train(
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    train_examples: Sequence[Any],
    valid_examples: Sequence[Any] | None,
    out_dir: Path,
    hooks: TrainHooks,
    *,
    resume_from: tuple[int, Path] | None = None,  # (last finished epoch, its checkpoint folder)
    device: str = "cpu",
) -> TrainResult:
    """Fine-tune LoRA adapters on `model` in place; checkpoints land in out_dir/epoch-<n>/."""
    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    objective = make_objective(
        config.method, tokenizer, max_len=config.max_seq_len, pad_id=pad_id, device=device, beta=config.beta
    )
    train_data = objective.encode(train_examples)
    valid_data = objective.encode(valid_examples or [])
    if not train_data:
        raise ValueError("no training example has an assistant answer left after tokenization")

    model = _attach_lora(model, config, resume_from)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.n_epochs
    first_epoch = resume_from[0] + 1 if resume_from else 1
    step = steps_per_epoch * (first_epoch - 1)
    optimizer, scheduler = _optimizer(params, config, total_steps, step, resume_from[1] if resume_from else None)
    valid_rows = itertools.cycle(valid_data) if valid_data else None  # a rotating sample for the per-step metrics
    labels = label_set(valid_examples or []) if config.method == "supervised" else None
    tokens_per_epoch = sum(_tokens(row) for row in train_data)
    checkpoint = resume_from[1] if resume_from else out_dir
    for epoch in range(first_epoch, config.n_epochs + 1):
        running, correct, count, seen = 0.0, 0, 0, 0
        # Same seed + epoch → same order, so a resumed run sees what an uninterrupted one would have.
        for batch in objective.batches(train_data, config.batch_size, config.seed * 1000 + epoch):
            if hooks.should_stop():
                raise Stopped()
            m = objective.measure(model, batch)
            optimizer.zero_grad(set_to_none=True)
            m.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            metrics = {"train_loss": m.loss.item(), "train_mean_token_accuracy": m.correct / max(m.count, 1)}
            running, correct, count, seen = running + m.loss.item(), correct + m.correct, count + m.count, seen + 1
            if valid_rows is not None and config.eval_every and step % config.eval_every == 0:
                sample = [next(valid_rows) for _ in range(min(config.batch_size, len(valid_data)))]
                v = evaluate(model, objective, sample, config.batch_size)
                metrics.update(valid_loss=v[0], valid_mean_token_accuracy=v[1])
            hooks.on_step(step=step, total_steps=total_steps, epoch=epoch, metrics=metrics)
        epoch_metrics: Metrics = {
            "train_loss": running / max(seen, 1),
            "train_mean_token_accuracy": correct / max(count, 1),
        }
        if valid_data:
            epoch_metrics.update(
                _full_validation(model, tokenizer, objective, valid_data, valid_examples or [], labels, config, device)
            )
        checkpoint = out_dir / f"epoch-{epoch}"
        model.save_pretrained(checkpoint, safe_serialization=True)
        save_training_state(checkpoint, optimizer, scheduler, {"epoch": epoch, "step": step})
        hooks.on_epoch(epoch=epoch, step=step, metrics=epoch_metrics, checkpoint=checkpoint)
    return TrainResult(adapter_dir=checkpoint, trained_tokens=tokens_per_epoch * config.n_epochs, steps=step)


def _optimizer(
    params: list[Any], config: TrainConfig, total_steps: int, step: int, resume: Path | None
) -> tuple[Any, Any]:
    """AdamW and its linear-decay schedule, restored from the resume checkpoint when it saved them."""
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    decay = linear_decay(total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    if resume is not None and load_training_state(resume, optimizer, scheduler) is None:
        # A checkpoint saved without optimizer state: fresh moments, the schedule moved on to where it was.
        scheduler.last_epoch = step
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * decay(step)
    return optimizer, scheduler


def _full_validation(
    model: Any,
    tokenizer: Any,
    objective: Objective,
    valid_data: Sequence[Any],
    valid_examples: Sequence[Any],
    labels: list[str] | None,
    config: TrainConfig,
    device: str,
) -> Metrics:
    """A checkpoint's validation: the whole file's loss and accuracy, and a classifier's accuracy + confusion matrix."""
    loss, accuracy = evaluate(model, objective, valid_data, config.batch_size)
    out: Metrics = {
        "valid_loss": loss,
        "valid_mean_token_accuracy": accuracy,
        "full_valid_loss": loss,
        "full_valid_mean_token_accuracy": accuracy,
    }
    if labels is not None:
        report = classification_report(model, tokenizer, valid_examples, labels, device)
        out["valid_classification_accuracy"] = report["accuracy"]
        out["valid_confusion_matrix"] = {"labels": report["labels"], "matrix": report["confusion_matrix"]}
    return out


def _tokens(row: Any) -> int:
    return sum(len(e.input_ids) for e in row) if isinstance(row, tuple) else len(row.input_ids)


class PrintHooks:
    """Hooks for running the trainer by hand: print progress, never stop."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def on_step(self, *, step: int, total_steps: int, epoch: int, metrics: Metrics) -> None:
        print(f"step {step}/{total_steps} epoch {epoch} {_fmt(metrics)} ({time.monotonic() - self.t0:.1f}s)")

    def on_epoch(self, *, epoch: int, step: int, metrics: Metrics, checkpoint: Path) -> None:
        print(f"epoch {epoch} {_fmt(metrics)} → {checkpoint.name}")

    def should_stop(self) -> bool:
        return False


def _fmt(metrics: Metrics) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
