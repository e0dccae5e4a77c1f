"""The fine-tuning worker: claims jobs through the database, validates, trains, checkpoints, publishes the adapter.

Runs in its own process (`llmaas worker`, or the one `llmaas serve` starts), never in the server's event loop.
One job at a time: `claim()` takes it atomically, a heartbeat thread keeps the lease, the trainer checks
`should_stop()` between steps (a cancel or a lost lease stops it within about a second). Each epoch's adapter goes
to the BlobStore and becomes the resume point, so a worker killed with `kill -9` costs at most one epoch: its
lease expires and the next worker resumes (or the job fails after `worker_max_attempts` lost workers).
Serving the result is `training/registry.py`'s job: a succeeded job with an adapter is all it needs.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from llmaas.config import ModelSpec, Settings
from llmaas.errors import NotFound
from llmaas.ids import new_id
from llmaas.store import files as files_db
from llmaas.store import training as training_db
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.store.files import FileRecord
from llmaas.store.training import FineTuningJob
from llmaas.training import jobs as J
from llmaas.training.auto import auto_epochs
from llmaas.training.files import FileValidationError, Row, parse_jsonl
from llmaas.training.jobs import JobStatus
from llmaas.training.registry import materialize
from llmaas.training.results import write_result_file
from llmaas.training.sources import resolve_source
from llmaas.training.state import OPTIMIZER_FILE, STATE_FILE
from llmaas.training.trainer import Stopped, TrainConfig, load_base, train

log = logging.getLogger("llmaas.training.worker")


class JobFailed(Exception):
    """A job-level failure with a client-safe message (no paths, no tracebacks)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "param": param}


class Lease:
    """Keeps a job's lease alive from a thread; `lost` turns True when the job is no longer ours."""

    def __init__(self, store: Store, job_id: str, worker_id: str, lease_s: float) -> None:
        self.store, self.job_id, self.worker_id, self.lease_s = store, job_id, worker_id, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        interval = min(self.lease_s / 3, 1.0)  # also the cancel latency
        while not self._stop.wait(interval):
            try:
                with self.store.session() as s:
                    ok = J.heartbeat(s, self.job_id, worker_id=self.worker_id, lease_s=self.lease_s)
            except Exception:  # a database hiccup: try again; the lease outlives a few misses
                log.warning("heartbeat failed for %s", self.job_id, exc_info=True)
                continue
            if not ok:
                self.lost.set()
                return

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def _describe(metrics: dict[str, Any]) -> str:
    text = f"training loss={metrics['train_loss']:.4f}"
    if "valid_loss" in metrics:
        text += f", validation loss={metrics['valid_loss']:.4f}"
    if "valid_classification_accuracy" in metrics:
        text += f", validation accuracy={metrics['valid_classification_accuracy']:.3f}"
    return text


class JobHooks:
    """TrainHooks that write events, checkpoints and the resume point to the database."""

    def __init__(self, worker: Worker, job: FineTuningJob, lease: Lease, stop: threading.Event) -> None:
        self.worker, self.job, self.lease, self.stop = worker, job, lease, stop

    def on_step(self, *, step: int, total_steps: int, epoch: int, metrics: dict[str, Any]) -> None:
        data = {"step": step, "total_steps": total_steps, "epoch": epoch, **_rounded(metrics)}
        with self.worker.store.session() as s:
            training_db.add_event(
                s, self.job, f"Step {step}/{total_steps}: {_describe(metrics)}", type="metrics", data=data
            )

    def on_epoch(self, *, epoch: int, step: int, metrics: dict[str, Any], checkpoint: Path) -> None:
        key = f"{self.job.id}/epoch-{epoch}"
        self.worker.blobs.put_dir(key, checkpoint)
        shown: dict[str, Any] = {"step": step, **_rounded(metrics)}
        with self.worker.store.session() as s:
            training_db.update_owned(
                s, self.job.id, worker_id=self.worker.worker_id, resume_epoch=epoch, resume_key=key
            )
            J.add_checkpoint(s, self.job, epoch=epoch, step=step, metrics=shown, blob_key=key)
            training_db.add_event(
                s, self.job, f"Epoch {epoch}: {_describe(metrics)}", type="metrics", data={"epoch": epoch, **shown}
            )

    def should_stop(self) -> bool:
        return self.lease.lost.is_set() or self.stop.is_set()


class Worker:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, *, worker_id: str | None = None) -> None:
        self.settings, self.store, self.blobs = settings, store, blobs
        self.worker_id = worker_id or f"{socket.gethostname()[:32]}-{os.getpid()}-{new_id('w')[-6:]}"
        self.stop = threading.Event()  # SIGTERM: stop between steps and hand the job back
        self.work_dir = Path(settings.data_dir) / "training"

    # --- the loop --------------------------------------------------------------------------------------

    def run_forever(self, parent_pid: int | None = None) -> None:
        log.info("fine-tuning worker %s started", self.worker_id)
        if parent_pid is not None:
            threading.Thread(target=self._watch_parent, args=(parent_pid,), daemon=True).start()
        while not self.stop.is_set():
            if not self.run_once():
                self.stop.wait(self.settings.worker_poll_s)
        log.info("fine-tuning worker %s stopped", self.worker_id)

    def _watch_parent(self, parent_pid: int) -> None:
        while not self.stop.wait(1.0):
            if os.getppid() != parent_pid:  # the server is gone: stop as on SIGTERM
                log.warning("worker %s: parent %d exited; stopping", self.worker_id, parent_pid)
                self.stop.set()

    def run_once(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        with self.store.session() as s:
            job = J.claim(
                s,
                worker_id=self.worker_id,
                lease_s=self.settings.worker_lease_s,
                max_attempts=self.settings.worker_max_attempts,
            )
        if job is None:
            return False
        log.info("worker %s claimed %s (%s, attempt %d)", self.worker_id, job.id, job.status, job.attempts)
        with Lease(self.store, job.id, self.worker_id, self.settings.worker_lease_s) as lease:
            try:
                self._run(job, lease)
            except Stopped:
                self._stopped(job, lease)
            except JobFailed as exc:
                self._fail(job, exc.error)
            except Exception:
                log.exception("fine-tuning job %s failed", job.id)
                self._fail(
                    job, {"code": "training_error", "message": "Training failed with an internal error.", "param": None}
                )
        return True

    def _run(self, job: FineTuningJob, lease: Lease) -> None:
        spec = self._base_spec(job.model)
        if job.status == JobStatus.VALIDATING_FILES.api:
            self._validate(job)
            self._move(job, JobStatus.QUEUED, "Files validated; job queued")
        if job.status == JobStatus.QUEUED.api:
            self._move(job, JobStatus.RUNNING, "Fine-tuning job started")
        elif job.resume_key:
            with self.store.session() as s:
                training_db.add_event(
                    s, job, f"Resuming from the checkpoint of epoch {job.resume_epoch} (attempt {job.attempts})"
                )
        train_examples = self._examples(job.training_file, job, "training_file")
        valid_examples = self._examples(job.validation_file, job, "validation_file") if job.validation_file else None
        hp, lora = job.hyperparameters, job.method.get("lora", {})
        config = TrainConfig(
            n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"],
            learning_rate=hp["learning_rate"],
            seed=job.seed,
            lora_rank=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            method=job.method.get("type", "supervised"),
            beta=hp.get("beta", 0.1),
            eval_every=self.settings.finetune_eval_steps,
        )
        out_dir = self.work_dir / job.id
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            import torch

            device = "cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu"
            folder, gguf = resolve_source(spec.source, self.settings)
            model, tokenizer = load_base(folder, gguf, device)
            resume = None
            if job.resume_key and job.resume_epoch:
                resume = (job.resume_epoch, materialize(self.blobs, job.resume_key, out_dir / "resume"))
            result = train(
                model,
                tokenizer,
                config,
                train_examples,
                valid_examples,
                out_dir,
                JobHooks(self, job, lease, self.stop),
                resume_from=resume,
                device=device,
            )
            adapter_key = f"{job.id}/adapter"
            for name in (OPTIMIZER_FILE, STATE_FILE):  # the published adapter never resumes: its checkpoint keeps them
                (result.adapter_dir / name).unlink(missing_ok=True)
            self.blobs.put_dir(adapter_key, result.adapter_dir)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        name = J.fine_tuned_name(job.model, job.project_id, job.suffix, job.id)
        with self.store.session() as s:
            done = J.transition(
                s,
                job.id,
                JobStatus.SUCCEEDED,
                worker_id=self.worker_id,
                fine_tuned_model=name,
                trained_tokens=result.trained_tokens,
                adapter_key=adapter_key,
            )
            if done:  # in the same transaction: a succeeded job always has its result file
                write_result_file(s, self.blobs, job)
                training_db.add_event(
                    s, job, f"The job has successfully completed: {name}", data={"fine_tuned_model": name}
                )
        log.info("fine-tuning job %s %s", job.id, "succeeded" if done else "finished but was no longer ours")

    # --- steps -----------------------------------------------------------------------------------------

    def _base_spec(self, name: str) -> ModelSpec:
        for spec in self.settings.chat_models:
            if spec.name == name:
                return spec
        raise JobFailed("invalid_model", f"The base model '{name[:128]}' is not served here.", "model")

    def _read_file(self, file_id: str, job: FineTuningJob, param: str) -> FileRecord:
        with self.store.session() as s:
            try:
                return files_db.get_file(s, file_id, project_id=job.project_id)
            except NotFound:
                raise JobFailed(
                    "invalid_file", f"The {param.replace('_', ' ')} '{file_id[:80]}' no longer exists.", param
                ) from None

    def _chunks(self, record: FileRecord) -> Any:
        with self.blobs.open(record.blob_key) as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def _examples(self, file_id: str, job: FineTuningJob, param: str) -> list[Row]:
        record = self._read_file(file_id, job, param)
        try:
            return list(parse_jsonl(self._chunks(record), job.method.get("type", "supervised")))
        except FileValidationError as exc:
            kind = "training" if param == "training_file" else "validation"
            raise JobFailed(f"invalid_{kind}_file", f"Invalid {kind} file '{file_id}': {exc}", param) from None

    def _validate(self, job: FineTuningJob) -> None:
        count = len(self._examples(job.training_file, job, "training_file"))
        if job.validation_file:
            self._examples(job.validation_file, job, "validation_file")
        if job.hyperparameters["n_epochs"] == "auto":  # now that the file is counted (OpenAI's rule)
            n_epochs = auto_epochs(count)
            hp = {**job.hyperparameters, "n_epochs": n_epochs}
            kind = job.method.get("type", "supervised")
            shown = {**job.method.get(kind, {}).get("hyperparameters", {}), "n_epochs": n_epochs}
            method = {**job.method, kind: {"hyperparameters": shown}}
            with self.store.session() as s:
                training_db.update_owned(s, job.id, worker_id=self.worker_id, hyperparameters=hp, method=method)
            job.hyperparameters, job.method = hp, method

    def _move(self, job: FineTuningJob, to: JobStatus, message: str) -> None:
        with self.store.session() as s:
            if not J.transition(s, job.id, to, worker_id=self.worker_id):
                raise Stopped()  # cancelled (or taken over) meanwhile
            training_db.add_event(s, job, message)
        job.status = to.api

    def _fail(self, job: FineTuningJob, error: dict[str, Any]) -> None:
        with self.store.session() as s:
            if J.transition(s, job.id, JobStatus.FAILED, worker_id=self.worker_id, error=error):
                training_db.add_event(s, job, error["message"], level="error")

    def _stopped(self, job: FineTuningJob, lease: Lease) -> None:
        if self.stop.is_set() and not lease.lost.is_set():
            # Shutting down: hand the job back at once (not counted as a lost worker).
            with self.store.session() as s:
                training_db.hand_back(s, job.id, worker_id=self.worker_id)
            log.info("worker %s handed %s back", self.worker_id, job.id)
        else:
            log.info("worker %s stopped %s (cancelled or lease lost)", self.worker_id, job.id)


def run(worker: Worker, parent_pid: int | None = None) -> None:
    """`llmaas worker`'s loop (the worker from `services.build_worker`): claim and train until SIGTERM/SIGINT."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())
    try:
        worker.run_forever(parent_pid)
    finally:
        worker.store.close()
