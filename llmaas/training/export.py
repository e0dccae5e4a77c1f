"""Taking an adapter away: a finished job's LoRA as a PEFT folder in a zip, loadable with `PeftModel.from_pretrained`.

The zip holds exactly two entries with fixed names, `adapter_config.json` and `adapter_model.safetensors` (the
optimizer state stored beside checkpoints stays home), so no entry name ever comes from data. The config's
`base_model_name_or_path` is our local path to the base weights; the zip says the served model's name instead
(no server path leaves the machine). Built in a spooled temporary file, so a large adapter does not sit in memory.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from typing import IO

from llmaas.store.blobs import BlobStore

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
SPOOL_BYTES = 8 << 20


def adapter_zip(blobs: BlobStore, key: str, base_model: str) -> IO[bytes]:
    """The adapter stored under blob folder `key` as a zip file object, positioned at its start."""
    config = json.loads(blobs.read(f"{key}/{CONFIG}"))
    config["base_model_name_or_path"] = base_model
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned open: the response closes it
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(CONFIG, json.dumps(config, indent=2))
        with blobs.open(f"{key}/{WEIGHTS}") as src, z.open(WEIGHTS, "w", force_zip64=True) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    out.seek(0)
    return out
