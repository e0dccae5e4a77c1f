"""`/v1/fine_tuning/jobs` handlers, framework-free: validated requests in, OpenAI job/event/checkpoint objects out.

Creation checks what the schema cannot (the base model is served and adaptable, the files exist in the caller's
project with purpose fine-tune) and stores a job in `validating_files`; a worker process does the rest. Nothing
here trains or touches torch. Another project's job is a 404. `adapter()` hands out a succeeded job's LoRA as a
PEFT zip (`training/export.py`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, TypeVar

from llmaas.api.protocol.fine_tuning import (
    FineTuningCheckpointList,
    FineTuningCheckpointObject,
    FineTuningEventList,
    FineTuningEventObject,
    FineTuningJobCreate,
    FineTuningJobList,
    FineTuningJobObject,
    JobHyperparameters,
)
from llmaas.api.serving.files import read_chunks
from llmaas.config import Settings
from llmaas.errors import InvalidRequest, NotFound, Unavailable
from llmaas.store import files as files_db
from llmaas.store import training as training_db
from llmaas.store.training import FineTuningJob
from llmaas.tenancy.types import Principal
from llmaas.training import jobs as J
from llmaas.training.export import adapter_zip

T = TypeVar("T")


def job_object(job: FineTuningJob) -> FineTuningJobObject:
    hp = job.hyperparameters
    return FineTuningJobObject(
        id=job.id,
        model=job.model,
        created_at=job.created_at,
        finished_at=job.finished_at,
        fine_tuned_model=job.fine_tuned_model,
        organization_id=job.project_id,
        # The step-metrics CSV (training/results.py), written just before a job succeeds; its id follows from the job's.
        result_files=[J.result_file_id(job.id)] if job.status == J.JobStatus.SUCCEEDED.api else [],
        status=job.status,
        validation_file=job.validation_file,
        training_file=job.training_file,
        hyperparameters=JobHyperparameters(
            n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"],
            learning_rate_multiplier=hp["learning_rate_multiplier"],
        ),
        trained_tokens=job.trained_tokens,
        error=job.error,
        user_provided_suffix=job.suffix,
        seed=job.seed,
        method=job.method,
    )


class FineTuningService:
    def __init__(self, store: Any, settings: Settings, blobs: Any = None) -> None:
        if store is None:
            raise Unavailable("Fine-tuning needs the database; this server runs without one.")
        self.store, self.settings, self.blobs = store, settings, blobs

    async def _db(self, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            with self.store.session() as s:
                return fn(s)

        return await asyncio.to_thread(run)

    def _check_model(self, principal: Principal, model: str) -> None:
        spec = next((m for m in self.settings.chat_models if m.name == model), None)
        if spec is None or not principal.may_use(model):
            raise InvalidRequest(
                f"Model {model[:128]!r} is not available for fine-tuning.", param="model", code="model_not_available"
            )
        if not spec.allow_adapters:
            raise InvalidRequest(
                f"Model {model[:128]!r} does not allow fine-tuned adapters.", param="model", code="model_not_available"
            )

    @staticmethod
    def _check_file(s: Any, file_id: str, principal: Principal, param: str) -> None:
        try:
            record = files_db.get_file(s, file_id, project_id=principal.project_id, param=param)
        except NotFound:
            raise InvalidRequest(f"File {file_id[:80]!r} not found.", param=param, code="invalid_file") from None
        if record.purpose != "fine-tune":
            raise InvalidRequest(
                f"File {file_id[:80]!r} has purpose {record.purpose!r}, not 'fine-tune'.",
                param=param,
                code="invalid_file",
            )

    async def create(self, principal: Principal, body: FineTuningJobCreate) -> FineTuningJobObject:
        self._check_model(principal, body.model)
        hyperparameters, method = body.resolve()
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)

        def run(s: Any) -> FineTuningJobObject:
            self._check_file(s, body.training_file, principal, "training_file")
            if body.validation_file:
                self._check_file(s, body.validation_file, principal, "validation_file")
            job = J.create_job(
                s,
                project_id=principal.project_id,
                model=body.model,
                training_file=body.training_file,
                validation_file=body.validation_file,
                suffix=body.suffix or None,
                seed=seed,
                hyperparameters=hyperparameters,
                method=method,
            )
            return job_object(job)

        return await self._db(run)

    async def list(self, principal: Principal, *, after: str | None, limit: int) -> FineTuningJobList:
        def run(s: Any) -> FineTuningJobList:
            rows, more = training_db.list_jobs(s, project_id=principal.project_id, after=after, limit=limit)
            return FineTuningJobList(data=[job_object(j) for j in rows], has_more=more)

        return await self._db(run)

    async def get(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        return await self._db(lambda s: job_object(training_db.get_job(s, job_id, project_id=principal.project_id)))

    async def cancel(self, principal: Principal, job_id: str) -> FineTuningJobObject:
        return await self._db(lambda s: job_object(J.cancel_job(s, job_id, project_id=principal.project_id)))

    async def events(self, principal: Principal, job_id: str, *, after: str | None, limit: int) -> FineTuningEventList:
        def run(s: Any) -> FineTuningEventList:
            rows, more = training_db.list_events(s, job_id, project_id=principal.project_id, after=after, limit=limit)
            return FineTuningEventList(data=[FineTuningEventObject.of(e) for e in rows], has_more=more)

        return await self._db(run)

    async def checkpoints(
        self, principal: Principal, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningCheckpointList:
        def run(s: Any) -> FineTuningCheckpointList:
            rows, more = training_db.list_checkpoints(
                s, job_id, project_id=principal.project_id, after=after, limit=limit
            )
            data = [FineTuningCheckpointObject.of(c) for c in rows]
            return FineTuningCheckpointList(
                data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
            )

        return await self._db(run)

    async def adapter(self, principal: Principal, job_id: str) -> AsyncIterator[bytes]:
        """A succeeded job's adapter as a PEFT zip, in chunks (ownership and state are checked before the first byte)."""

        def find(s: Any) -> tuple[str, str]:
            job = training_db.get_job(s, job_id, project_id=principal.project_id)
            if job.status != "succeeded" or not job.adapter_key:
                raise InvalidRequest(
                    f"The job has no adapter to download: status {job.status}.", param="fine_tuning_job_id"
                )
            return job.adapter_key, job.model

        key, base = await self._db(find)
        handle: IO[bytes] = await asyncio.to_thread(adapter_zip, self.blobs, key, base)
        return read_chunks(handle)
