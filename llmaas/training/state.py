"""The optimizer and learning-rate schedule saved beside each checkpoint, so a resumed job continues exactly.

AdamW's per-parameter tensors (`step`, `exp_avg`, `exp_avg_sq`) go to `optimizer.safetensors` under
`<param index>.<name>`; the parameter groups and the scheduler's state (plain numbers) go to `trainer_state.json`.
No pickle anywhere (SECURITY.md #7), so loading a checkpoint never runs code. PEFT ignores both files, and the
adapter download leaves them out. Nothing here knows jobs or storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def save_training_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any, extra: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        for index, per_param in state["state"].items()
        for name, value in per_param.items()
        if isinstance(value, torch.Tensor)
    }
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    sched = {
        k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"
    }  # lambdas are code, rebuilt by the caller
    (folder / STATE_FILE).write_text(json.dumps({"param_groups": groups, "scheduler": sched, **extra}))


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any] | None:
    """Restore both in place from `folder`; the saved `extra` dict, or None when the folder has no saved state."""
    from safetensors.torch import load_file

    if not (folder / OPTIMIZER_FILE).is_file() or not (folder / STATE_FILE).is_file():
        return None
    saved = json.loads((folder / STATE_FILE).read_text())
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    # On the CPU: load_state_dict moves the moments to each parameter's device and keeps `step` where AdamW wants it.
    for key, value in load_file(str(folder / OPTIMIZER_FILE), device="cpu").items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in saved.pop("param_groups")]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict({**saved.pop("scheduler"), "lr_lambdas": [None] * len(optimizer.param_groups)})
    return saved
