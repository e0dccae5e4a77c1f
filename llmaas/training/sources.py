"""Where the trainer finds a base model's weights: the engine's own resolution of a served model's `source`.

One rule for both (`llmaas.engine.models.loader.resolve_model_dir`), so a model and its fine-tunes always start from
the same weights: builtin names, local HF folders, `.gguf` files (dequantized once into the engine's conversion
cache, with the HF module names the adapters are saved under) and hub ids already in the local cache. Only server
configuration reaches this (a ModelSpec's `source`), never client input, and nothing is fetched from a hub.
"""

from __future__ import annotations

from pathlib import Path

from llmaas.config import ModelSpec, Settings
from llmaas.engine.models.loader import resolve_model_dir


def resolve_source(source: str, settings: Settings | None = None) -> tuple[Path, str | None]:
    """(the HF folder of `source`, None). The second slot (a GGUF file inside the folder, for `load_base`) stays None:
    the engine has already converted a GGUF source into a folder, usually while the server started. Without
    `settings`, the environment's (LLMAAS_*) say where that conversion cache is."""
    spec = ModelSpec(name=source[:128], source=source)
    return resolve_model_dir(spec, settings if settings is not None else Settings()), None
