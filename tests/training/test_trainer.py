"""The trainer on the tiny model: OpenAI's metric names, exact resume (optimizer + schedule), DPO's preference shift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmaas.training.auto import auto_epochs
from llmaas.training.dataset import encode_example, pad
from llmaas.training.files import Example, Preference
from llmaas.training.objectives import sequence_logprobs
from llmaas.training.state import OPTIMIZER_FILE, STATE_FILE
from llmaas.training.trainer import Stopped, TrainConfig, load_base, train

from .conftest import ANSWER, fact_examples

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT vs transformers 5.x

STEP_KEYS = {"train_loss", "train_mean_token_accuracy"}
VALID_KEYS = {"valid_loss", "valid_mean_token_accuracy"}
FULL_KEYS = {"full_valid_loss", "full_valid_mean_token_accuracy"}


class Recorder:
    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.stop_after_epoch = stop_after_epoch

    def on_step(self, *, step: int, total_steps: int, epoch: int, metrics: dict[str, float]) -> None:
        self.steps.append({"step": step, **metrics})

    def on_epoch(self, *, epoch: int, step: int, metrics: dict[str, float], checkpoint: Path) -> None:
        self.epochs.append({"epoch": epoch, "step": step, **metrics})

    def should_stop(self) -> bool:
        return self.stop_after_epoch is not None and len(self.epochs) >= self.stop_after_epoch


def examples(n: int) -> list[Example]:
    return [Example(r["messages"]) for r in fact_examples(n)]


CONFIG = dict(batch_size=4, learning_rate=1e-2, seed=5, lora_rank=4, lora_alpha=8)


def test_metrics_carry_openai_names(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tok = load_base(tiny_model_dir)
    hooks = Recorder()
    train(model, tok, TrainConfig(n_epochs=2, eval_every=2, **CONFIG), examples(8), examples(4), tmp_path, hooks)
    assert [s["step"] for s in hooks.steps] == [1, 2, 3, 4]
    assert set(hooks.steps[0]) == {"step"} | STEP_KEYS  # step 1: no validation
    assert set(hooks.steps[1]) == {"step"} | STEP_KEYS | VALID_KEYS  # every eval_every steps: one validation batch
    assert all(set(e) == {"epoch", "step"} | STEP_KEYS | VALID_KEYS | FULL_KEYS for e in hooks.epochs)
    assert all(0.0 <= e["full_valid_mean_token_accuracy"] <= 1.0 for e in hooks.epochs)
    assert hooks.epochs[-1]["full_valid_loss"] < hooks.epochs[0]["full_valid_loss"]
    assert (tmp_path / "epoch-2" / OPTIMIZER_FILE).is_file() and (tmp_path / "epoch-2" / STATE_FILE).is_file()


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_restores_optimizer_and_schedule_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(n_epochs=3, **CONFIG)
    data = examples(8)
    straight = Recorder()
    model, tok = load_base(tiny_model_dir)
    train(model, tok, config, data, None, tmp_path / "a", straight)

    model, tok = load_base(tiny_model_dir)
    with pytest.raises(Stopped):
        train(model, tok, config, data, None, tmp_path / "b", Recorder(stop_after_epoch=1))
    resumed = Recorder()
    model, tok = load_base(tiny_model_dir)
    train(model, tok, config, data, None, tmp_path / "b", resumed, resume_from=(1, tmp_path / "b" / "epoch-1"))

    # the same losses after the resume point, the same adapter and the same Adam moments at the end
    assert [s["train_loss"] for s in resumed.steps] == [s["train_loss"] for s in straight.steps[2:]]
    a, b = _adapter(tmp_path / "a" / "epoch-3"), _adapter(tmp_path / "b" / "epoch-3")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import load_file

    oa, ob = (load_file(str(tmp_path / x / "epoch-3" / OPTIMIZER_FILE)) for x in ("a", "b"))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert (tmp_path / "a" / "epoch-3" / STATE_FILE).read_text() == (
        tmp_path / "b" / "epoch-3" / STATE_FILE
    ).read_text()

    # without the saved state (fresh moments), the same resume ends elsewhere: the test can tell
    (tmp_path / "b" / "epoch-1" / OPTIMIZER_FILE).unlink()
    model, tok = load_base(tiny_model_dir)
    train(model, tok, config, data, None, tmp_path / "c", Recorder(), resume_from=(1, tmp_path / "b" / "epoch-1"))
    c = _adapter(tmp_path / "c" / "epoch-3")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _pairs(prompts: list[str]) -> list[Preference]:
    def chat(p: str, answer: str) -> Example:
        return Example([{"role": "user", "content": p}, {"role": "assistant", "content": answer}])

    return [Preference(chat(p, ANSWER), chat(p, "no idea")) for p in prompts]


def _margin(model: Any, tok: Any, rows: list[Preference]) -> float:
    """Mean log p(preferred) - log p(non-preferred) over rows."""
    encoded = [encode_example(tok, side, 256, last_only=True) for r in rows for side in (r.preferred, r.non_preferred)]
    with torch.no_grad():
        lp = sequence_logprobs(model, *pad(encoded, 0))
    return float((lp[0::2] - lp[1::2]).mean())


def test_dpo_moves_the_preferred_answer_above_the_other(tiny_model_dir: Path, tmp_path: Path) -> None:
    held_out = _pairs(["what now?", "tell me more", "and then?"])
    base, tok = load_base(tiny_model_dir)
    before = _margin(base, tok, held_out)
    hooks = Recorder()
    config = TrainConfig(n_epochs=4, method="dpo", beta=0.5, **CONFIG)
    train(base, tok, config, _pairs([f"question {i}" for i in range(8)]), held_out, tmp_path, hooks)
    from peft import PeftModel

    base, _ = load_base(tiny_model_dir)
    tuned = PeftModel.from_pretrained(base, tmp_path / "epoch-4")
    after = _margin(tuned, tok, held_out)
    assert after > before + 1.0, (before, after)
    assert hooks.steps[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at the start: log 2
    assert hooks.epochs[-1]["full_valid_loss"] < 0.69 and hooks.epochs[-1]["full_valid_mean_token_accuracy"] == 1.0


def test_auto_epochs_follow_openais_rule() -> None:
    assert [auto_epochs(n) for n in (1, 10, 20, 50, 1000, 10_000, 30_000)] == [25, 10, 5, 3, 3, 2, 1]
