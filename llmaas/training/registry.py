"""Fine-tuned models as the API sees them (`app.state.finetuned`): read from the store, so every replica agrees.

`lookup("ft:…", principal)` returns the model of a succeeded job of the caller's own project, or of one of its
checkpoints (`ft:…:<job id>:ckpt-step-<n>`, as OpenAI serves `fine_tuned_model_checkpoint`); None otherwise, also
for another project's model: the caller answers 404. `list(principal)` is what `/v1/models` adds (final models
only, as OpenAI lists them). The adapter
path is local: on a local BlobStore it is the stored folder itself, on a remote one a copy cached under the data
dir. Registering with the engine (`engine.register_adapter(adapter_id, adapter_path)`) is the serving layer's job.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmaas.store import training as training_db
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.store.training import FineTuningJob

CHECKPOINT_MARK = ":ckpt-step-"


@dataclass(frozen=True, slots=True)
class FineTunedModel:
    id: str  # ft:<base>:<project>:<suffix>:<job id>
    base_model: str
    adapter_id: str  # the job id: server-generated, unique, never client-chosen
    adapter_path: Path
    created: int
    owned_by: str  # the project


def materialize(blobs: BlobStore, key: str, cache_dir: Path) -> Path:
    """A local folder holding the blob folder `key` (the stored folder itself when the store is local)."""
    if blobs.is_local:
        return blobs.local_path(key)
    dest = cache_dir / key
    if not (dest / "adapter_config.json").exists():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        blobs.fs.get(blobs._path(key) + "/", str(tmp), recursive=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


class FineTunedModels:
    MAX_CACHED = 1024

    def __init__(self, store: Store, blobs: BlobStore, cache_dir: Path) -> None:
        self.store, self.blobs, self.cache_dir = store, blobs, cache_dir
        # Found models only (a published model never changes), keyed by tenant too; misses always ask the store,
        # so a model published by any replica's worker is served at once.
        self._found: OrderedDict[tuple[str, str], FineTunedModel] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any, store: Store, blobs: BlobStore | None = None) -> FineTunedModels:
        """`blobs`: the process's blob store (`services.build_runtime` passes it); tests may leave it to settings."""
        blobs = blobs if blobs is not None else BlobStore.from_settings(settings)
        return cls(store, blobs, Path(settings.data_dir) / "adapter-cache")

    def _model(self, job: FineTuningJob) -> FineTunedModel:
        return FineTunedModel(
            id=job.fine_tuned_model or "",
            base_model=job.model,
            adapter_id=job.id,
            adapter_path=materialize(self.blobs, job.adapter_key or "", self.cache_dir),
            created=job.finished_at or job.created_at,
            owned_by=job.project_id,
        )

    def _checkpoint(self, project_id: str, model: str) -> list[FineTunedModel]:
        job_id = model.rsplit(":", 2)[-2] if model.count(":") >= 2 else ""
        with self.store.session() as s:
            row = training_db.find_checkpoint(s, project_id=project_id, job_id=job_id, name=model)
        if row is None:
            return []
        ckpt, job = row
        path = materialize(self.blobs, ckpt.blob_key, self.cache_dir)
        # The checkpoint's own id names its adapter in the engine: server-generated, distinct from the job's.
        return [FineTunedModel(model, job.model, ckpt.id, path, ckpt.created_at, job.project_id)]

    def _query(self, project_id: str, model: str | None) -> list[FineTunedModel]:
        if model is not None and CHECKPOINT_MARK in model:
            return self._checkpoint(project_id, model)
        with self.store.session() as s:
            jobs = training_db.succeeded_jobs(s, project_id=project_id, model=model)
        return [self._model(j) for j in jobs]

    async def lookup(self, model: str, principal: Any) -> FineTunedModel | None:
        if not model.startswith("ft:"):
            return None
        key = (principal.project_id, model)
        if key in self._found:
            self._found.move_to_end(key)
            return self._found[key]
        found = await asyncio.to_thread(self._query, principal.project_id, model)
        if not found:
            return None
        self._found[key] = found[0]
        if len(self._found) > self.MAX_CACHED:
            self._found.popitem(last=False)
        return found[0]

    async def list(self, principal: Any) -> list[FineTunedModel]:
        return await asyncio.to_thread(self._query, principal.project_id, None)
