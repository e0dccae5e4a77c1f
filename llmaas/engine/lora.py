"""Multi-LoRA serving: many PEFT adapters over one base model, mixed freely within one batch (S-LoRA/Punica spirit).

`LoraManager` knows which adapters exist (registered by our own id → a folder in our own store), loads them on first
use (safetensors only) and keeps at most `max_loras` in memory (LRU). Each engine step calls `prepare(ids)` with one
adapter id per token row; the returned `LoraContext` gives the model, for each projection, the per-row delta
`scale · (x Aᵢᵀ) Bᵢᵀ` of that row's adapter (rows grouped by adapter; rows without one get zero).

It does not train (training/ does), never fetches an adapter by a client-given path, and supports plain LoRA on the
seven Llama-family projections: DoRA, LoRA biases, embedding LoRA and `modules_to_save` are refused, not ignored.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmaas.errors import EngineError

log = logging.getLogger(__name__)

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


class AdapterError(EngineError):
    """An adapter that cannot be served (a server-side problem; the message is safe to show: no paths)."""


@dataclass(slots=True)
class _Weights:
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    scale: float


@dataclass(slots=True)
class _Adapter:
    weights: dict[tuple[int, str], _Weights]  # (layer, module) -> A, B, scale


def module_dims(config: Any) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection, from an HF config (LlamaConfig and friends)."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(config.intermediate_size)
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


class LoraManager:
    def __init__(
        self,
        config: Any,
        max_loras: int = 8,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_layers = int(config.num_hidden_layers)
        self.dims = module_dims(config)
        self.max_loras = max(1, max_loras)
        self.device = torch.device(device)
        self.dtype = dtype
        self._paths: dict[str, Path] = {}
        self._loaded: OrderedDict[str, _Adapter] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # register() runs on the event loop, prepare() on the engine thread

    # --- registry -------------------------------------------------------------------------------------

    def register(self, adapter_id: str, path: Path) -> None:
        """Make an adapter servable; only its config is read now (clear errors early), weights on first use.

        Idempotent (the API registers on every request of a fine-tuned model): the same id and path is a no-op;
        a new path for a known id replaces its weights.
        """
        path = Path(path)
        if self._paths.get(adapter_id) == path:
            return
        _read_config(path)
        if not (path / "adapter_model.safetensors").is_file():
            raise AdapterError(f"adapter {adapter_id!r} has no adapter_model.safetensors (pickle is never loaded)")
        with self._lock:
            self._paths[adapter_id] = path
            self._loaded.pop(adapter_id, None)  # re-registering replaces the weights

    def unregister(self, adapter_id: str) -> None:
        with self._lock:
            self._paths.pop(adapter_id, None)
            self._loaded.pop(adapter_id, None)

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self._paths

    @property
    def num_loaded(self) -> int:
        return len(self._loaded)

    # --- per step -------------------------------------------------------------------------------------

    def prepare(self, adapter_ids: list[str | None]) -> "LoraContext | None":
        """The LoRA view of one step: one adapter id (or None) per token row. None when no row has one."""
        wanted = list(dict.fromkeys(a for a in adapter_ids if a is not None))
        if not wanted:
            return None
        adapters = {a: self._get(a) for a in wanted}
        self._evict(keep=set(wanted))
        if len(wanted) == 1 and all(a == wanted[0] for a in adapter_ids):
            groups = [(adapters[wanted[0]], None)]  # every row uses one adapter: no gather/scatter
        else:
            rows: dict[str, list[int]] = {a: [] for a in wanted}
            for i, a in enumerate(adapter_ids):
                if a is not None:
                    rows[a].append(i)
            groups = [(adapters[a], torch.tensor(r, device=self.device)) for a, r in rows.items()]
        return LoraContext(groups, len(adapter_ids), self.dims)

    def _get(self, adapter_id: str) -> _Adapter:
        with self._lock:
            if adapter_id in self._loaded:
                self._loaded.move_to_end(adapter_id)
                return self._loaded[adapter_id]
            path = self._paths.get(adapter_id)
        if path is None:
            raise AdapterError(f"adapter {adapter_id!r} is not registered with this model")
        adapter = self._load(path)
        with self._lock:
            self._loaded[adapter_id] = adapter
        log.info("loaded LoRA adapter %s (%d modules)", adapter_id, len(adapter.weights))
        return adapter

    def _evict(self, keep: set[str]) -> None:
        with self._lock:
            for adapter_id in list(self._loaded):
                if len(self._loaded) <= self.max_loras:
                    break
                if adapter_id not in keep:
                    del self._loaded[adapter_id]

    def _load(self, path: Path) -> _Adapter:
        from safetensors.torch import load_file

        cfg = _read_config(path)
        r_default, alpha_default = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
        rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        tensors = load_file(str(path / "adapter_model.safetensors"))
        pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            m = _KEY.search(key)
            if m is None:
                raise AdapterError(f"adapter weight {key!r} is not a LoRA weight of a supported projection")
            layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
            if module not in self.dims or layer >= self.num_layers:
                raise AdapterError(f"adapter weight {key!r} does not fit this model")
            pairs.setdefault((layer, module), {})[ab] = t
        weights: dict[tuple[int, str], _Weights] = {}
        for (layer, module), ab in pairs.items():
            if set(ab) != {"A", "B"}:
                raise AdapterError(f"adapter is missing lora_A or lora_B for layer {layer} {module}")
            a, b = ab["A"], ab["B"]
            d_in, d_out = self.dims[module]
            r = a.shape[0]
            if a.shape != (r, d_in) or b.shape != (d_out, r):
                raise AdapterError(f"adapter shapes for layer {layer} {module} do not fit this model")
            block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            name = f"model.layers.{layer}.{block}.{module}"  # what PEFT's rank/alpha patterns match against
            rk, ak = _pattern_key(rank_pattern, name), _pattern_key(alpha_pattern, name)
            rank = int(rank_pattern[rk]) if rk else r_default
            alpha = float(alpha_pattern[ak]) if ak else alpha_default
            if rank != r:
                raise AdapterError(f"adapter rank for layer {layer} {module} disagrees with its config")
            scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            weights[(layer, module)] = _Weights(
                a.to(self.device, self.dtype).contiguous(), b.to(self.device, self.dtype).contiguous(), scale
            )
        if not weights:
            raise AdapterError("adapter has no LoRA weights")
        return _Adapter(weights)


class LoraContext:
    """Per-step: which rows use which adapter. `delta` is called by every projection of every layer."""

    def __init__(
        self, groups: list[tuple[_Adapter, torch.Tensor | None]], num_rows: int, dims: dict[str, tuple[int, int]]
    ) -> None:
        self.groups = groups  # (adapter, row indices or None = all rows)
        self.num_rows = num_rows
        self.dims = dims

    def delta(self, layer_idx: int, module: str, x: torch.Tensor) -> torch.Tensor | None:
        # x: [T, in] (any leading shape with T rows in total) -> [T, out], or None when no adapter touches it
        active = [(ad.weights[(layer_idx, module)], rows) for ad, rows in self.groups if (layer_idx, module) in ad.weights]
        if not active:
            return None
        lead, d_in = x.shape[:-1], x.shape[-1]
        flat = x.reshape(-1, d_in)
        if len(active) == 1 and active[0][1] is None:
            w = active[0][0]
            return ((flat @ w.a.T) @ w.b.T * w.scale).reshape(*lead, -1)
        out = flat.new_zeros(flat.shape[0], self.dims[module][1])
        for w, rows in active:
            if rows is None:
                out += (flat @ w.a.T) @ w.b.T * w.scale
            else:
                out.index_copy_(0, rows, (flat.index_select(0, rows) @ w.a.T) @ w.b.T * w.scale)
        return out.reshape(*lead, -1)


# --- config ---------------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterError("adapter folder has no adapter_config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise AdapterError("adapter_config.json is not valid JSON") from e
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError("only LoRA adapters are supported")
    for flag, what in (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save"), ("lora_bias", "LoRA biases")):
        if cfg.get(flag):
            raise AdapterError(f"adapters with {what} are not supported")
    targets = cfg.get("target_modules") or []  # a string is a regex: the weight names are checked on load
    if isinstance(targets, list) and any(str(t).split(".")[-1] not in MODULES for t in targets):
        raise AdapterError(f"adapter targets modules other than {', '.join(MODULES)}")
    return cfg


def _pattern_key(patterns: dict[str, Any], module_name: str) -> str | None:
    """PEFT's get_pattern_key: the rank/alpha pattern key whose regex ends the module name, if any."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None
