"""Multi-LoRA serving: many PEFT adapters over one base model, mixed freely within one batch (S-LoRA/Punica spirit).

`LoraManager` knows which adapters exist (registered by our own id → a folder in our own store), loads them on first
use (safetensors only) and keeps at most `max_loras` in memory (LRU). Each engine step calls `prepare(ids)` with one
adapter id per token row; the returned `LoraContext` gives the model, for each projection, the per-row delta
`scale · (x Aᵢᵀ) Bᵢᵀ` of that row's adapter (rows without one get zero).

Two matmuls per projection however many adapters a step mixes: the step's adapters are stacked along the rank,
`A_cat [Σr, in]` and `B_cat [out, Σr]` (scale folded into B), cached per set of adapters; a row mask
`M [T, Σr]` keeps each row on its own adapter's rank slice: `((x A_catᵀ) ⊙ M) B_catᵀ`.

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

from llmaas.engine.types import LORA_MODULES
from llmaas.errors import EngineError

log = logging.getLogger(__name__)

MODULES = LORA_MODULES
_STACK_CACHE = 4  # adapter sets whose stacked weights are kept (batches come and go)
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


class AdapterError(EngineError):
    """An adapter that cannot be served (a server-side problem; the message is safe to show: no paths)."""


@dataclass(slots=True)
class _Weights:
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r], the adapter's scale folded in


@dataclass(slots=True)
class _Adapter:
    weights: dict[tuple[int, str], _Weights]  # (layer, module) -> A, scaled B


@dataclass(slots=True)
class _Stacked:
    a: torch.Tensor  # A_cat [Σr, in]: the adapters that target this module, concatenated along the rank
    b: torch.Tensor  # B_cat [out, Σr]
    owners: tuple[int, ...]  # per rank column: the index (in the step's adapter set) of the adapter owning it


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
        self._stacks: OrderedDict[tuple[str, ...], dict[tuple[int, str], _Stacked]] = OrderedDict()  # per adapter set
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
            self._stacks.clear()

    def unregister(self, adapter_id: str) -> None:
        with self._lock:
            self._paths.pop(adapter_id, None)
            self._loaded.pop(adapter_id, None)
            self._stacks.clear()

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self._paths

    @property
    def num_loaded(self) -> int:
        return len(self._loaded)

    # --- per step -------------------------------------------------------------------------------------

    def prepare(self, adapter_ids: list[str | None]) -> LoraContext | None:
        """The LoRA view of one step: one adapter id (or None) per token row. None when no row has one."""
        wanted = tuple(sorted({a for a in adapter_ids if a is not None}))
        if not wanted:
            return None
        adapters = [self._get(a) for a in wanted]
        self._evict(keep=set(wanted))
        with self._lock:
            stacks = self._stacks.get(wanted)
            if stacks is not None:
                self._stacks.move_to_end(wanted)
        if stacks is None:
            stacks = self._stack(adapters)
            with self._lock:
                self._stacks[wanted] = stacks
                while len(self._stacks) > _STACK_CACHE:
                    self._stacks.popitem(last=False)
        if len(wanted) == 1 and None not in adapter_ids:
            return LoraContext(stacks, None, self.dtype)  # every row uses one adapter: no mask
        index = {a: i for i, a in enumerate(wanted)}
        rows = torch.tensor([-1 if a is None else index[a] for a in adapter_ids], device=self.device)  # [T]
        return LoraContext(stacks, rows, self.dtype)

    def _stack(self, adapters: list[_Adapter]) -> dict[tuple[int, str], _Stacked]:
        """A_cat / B_cat of every (layer, module) some of these adapters target (once per adapter set)."""
        stacks: dict[tuple[int, str], _Stacked] = {}
        for key in {k for ad in adapters for k in ad.weights}:
            parts = [(i, ad.weights[key]) for i, ad in enumerate(adapters) if key in ad.weights]
            owners = tuple(i for i, w in parts for _ in range(w.a.shape[0]))
            if len(parts) == 1:  # nothing to concatenate: share the adapter's own tensors
                stacks[key] = _Stacked(parts[0][1].a, parts[0][1].b, owners)
            else:
                a = torch.cat([w.a for _, w in parts])  # [Σr, in]
                b = torch.cat([w.b for _, w in parts], dim=1)  # [out, Σr]
                stacks[key] = _Stacked(a, b, owners)
        return stacks

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
            self._stacks.clear()
        log.info("loaded LoRA adapter %s (%d modules)", adapter_id, len(adapter.weights))
        return adapter

    def _evict(self, keep: set[str]) -> None:
        with self._lock:
            for adapter_id in list(self._loaded):
                if len(self._loaded) <= self.max_loras:
                    break
                if adapter_id not in keep:
                    del self._loaded[adapter_id]
                    self._stacks.clear()

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
            b = b.to(torch.float32) * scale  # fold the scale in before rounding to the engine dtype
            weights[(layer, module)] = _Weights(
                a.to(self.device, self.dtype).contiguous(), b.to(self.device, self.dtype).contiguous()
            )
        if not weights:
            raise AdapterError("adapter has no LoRA weights")
        return _Adapter(weights)


class LoraContext:
    """Per-step: the stacked weights of this step's adapters and each row's adapter. `delta` is called by every
    projection of every layer; the row mask is built once per rank layout (usually once per step)."""

    def __init__(self, stacks: dict[tuple[int, str], _Stacked], rows: torch.Tensor | None, dtype: torch.dtype) -> None:
        self.stacks = stacks
        self.rows = rows  # [T]: each row's adapter (index in the step's set), -1 for none; None: one adapter, all rows
        self.dtype = dtype
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}

    def delta(self, layer_idx: int, module: str, x: torch.Tensor) -> torch.Tensor | None:
        # x: [T, in] (any leading shape with T rows in total) -> [T, out], or None when no adapter touches it
        w = self.stacks.get((layer_idx, module))
        if w is None:
            return None
        lead, d_in = x.shape[:-1], x.shape[-1]
        h = x.reshape(-1, d_in) @ w.a.T  # [T, Σr]
        if self.rows is not None:
            h.mul_(self._mask(self.rows, w.owners))
        return (h @ w.b.T).reshape(*lead, -1)  # [T, out]

    def _mask(self, rows: torch.Tensor, owners: tuple[int, ...]) -> torch.Tensor:
        m = self._masks.get(owners)
        if m is None:  # M [T, Σr]: 1 where the row's adapter owns the rank column
            cols = torch.tensor(owners, device=rows.device)
            m = self._masks[owners] = (rows[:, None] == cols[None, :]).to(self.dtype)
        return m


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
