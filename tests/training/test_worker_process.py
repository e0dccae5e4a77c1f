"""Real `llmaas worker` processes: cancel stops training within seconds; `kill -9` mid-training resumes elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from llmaas.api.protocol.fine_tuning import FineTuningEventObject
from llmaas.config import Settings
from llmaas.store import training as training_db
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.training import jobs as J
from llmaas.training.spawn import SETTINGS_ENV

from .conftest import fact_examples, jsonl
from .test_worker import LORA, job, upload

# Many small steps, so there is time to act mid-training.
SLOW = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 5.0, "learning_rate": 1e-3}
# Far more steps than any CPU gets through in the few seconds a cancel may take.
LONG = {**SLOW, "n_epochs": 30}
# Enough epochs that the kill lands mid-job even on a fast CPU (the test polls every 0.2 s).
EPOCHS = 8


@pytest.fixture
def spawn(settings: Settings, sqlite_db: Store) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    shared = settings.model_copy(update={"database_url": sqlite_db.url})

    def start() -> subprocess.Popen[bytes]:
        env = {**os.environ, SETTINGS_ENV: shared.model_dump_json(), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "llmaas", "worker"], env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def events(store: Store, job_id: str) -> list[dict]:
    with store.session() as s:
        rows, _ = training_db.list_events(s, job_id, project_id="p1", after=None, limit=10_000)
        return [FineTuningEventObject.of(e).model_dump() for e in reversed(rows)]


def steps(store: Store, job_id: str) -> list[int]:
    return [e["data"]["step"] for e in events(store, job_id) if e["data"] and "total_steps" in e["data"]]


def new_job(store: Store, blobs: BlobStore, hyperparameters: dict = SLOW) -> str:
    with store.session() as s:
        return J.create_job(
            s,
            project_id="p1",
            model="tiny",
            training_file=upload(store, blobs, jsonl(fact_examples(24))),
            validation_file=None,
            suffix=None,
            seed=1,
            hyperparameters=hyperparameters,
            method={"type": "supervised", "lora": LORA},
        ).id


def test_cancel_stops_a_running_job_within_seconds(sqlite_db: Store, blobs: BlobStore, spawn) -> None:
    job_id = new_job(sqlite_db, blobs, LONG)
    worker = spawn()
    wait_for(lambda: len(steps(sqlite_db, job_id)) >= 2, what="training steps")
    with sqlite_db.session() as s:
        J.cancel_job(s, job_id, project_id="p1")
    time.sleep(3.0)  # the lease thread notices within ~1 s; the current step finishes
    before = steps(sqlite_db, job_id)
    time.sleep(2.0)
    assert steps(sqlite_db, job_id) == before, "training went on after cancel"
    assert max(before) < 24 * 30 and job(sqlite_db, job_id).status == "cancelled"
    assert worker.poll() is None  # the worker lives on, idle, ready for the next job
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_kill_9_mid_training_resumes_from_the_last_checkpoint(sqlite_db: Store, blobs: BlobStore, spawn) -> None:
    job_id = new_job(sqlite_db, blobs, {**SLOW, "n_epochs": EPOCHS})
    first = spawn()
    wait_for(
        lambda: job(sqlite_db, job_id).resume_epoch >= 1 and len(steps(sqlite_db, job_id)) > 26,
        what="epoch 1 checkpoint",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = max(steps(sqlite_db, job_id))
    checkpointed = job(sqlite_db, job_id).resume_epoch
    assert job(sqlite_db, job_id).status == "running"  # nobody is training it, but its lease still runs
    second = spawn()
    wait_for(lambda: job(sqlite_db, job_id).status not in ("running",), timeout=300, what="the job to finish")
    j = job(sqlite_db, job_id)
    assert j.status == "succeeded", j.error
    assert j.attempts == 2 and j.fine_tuned_model
    messages = [e["message"] for e in events(sqlite_db, job_id)]
    assert any(m.startswith("Resuming from the checkpoint of epoch") for m in messages)
    after = steps(sqlite_db, job_id)
    resumed = after[after.index(killed_at) + 1 :]
    # redoes only the unfinished epoch (none, when the kill lands right after an epoch's checkpoint was written)
    assert resumed[0] == 24 * checkpointed + 1 <= killed_at + 1
    assert resumed[-1] == 24 * EPOCHS
    with sqlite_db.session() as s:
        assert [c.epoch for c in training_db.list_checkpoints(s, job_id, project_id="p1", after=None, limit=10)[0]][
            0
        ] == EPOCHS
    second.send_signal(signal.SIGTERM)
    second.wait(30)
