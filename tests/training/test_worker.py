"""The worker in-process: validation failures, a full run (events, checkpoints, adapter), and that it learned."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from llmaas.api.protocol.fine_tuning import FineTuningEventObject
from llmaas.api.serving.fine_tuning import job_object
from llmaas.config import Settings
from llmaas.store import files as files_db
from llmaas.store import training as training_db
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.training import jobs as J
from llmaas.training.registry import FineTunedModels
from llmaas.training.worker import Worker

from .conftest import ANSWER, TINY, fact_examples, jsonl

HP = {"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 50.0, "learning_rate": 1e-2}
LORA = {
    "rank": 16,
    "alpha": 32,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def upload(store: Store, blobs: BlobStore, data: bytes, project: str = "p1") -> str:
    with store.session() as s:
        return files_db.create_file(
            s, blobs, io.BytesIO(data), project_id=project, purpose="fine-tune", filename="../../etc/x.jsonl"
        ).id


def create(store: Store, training_file: str, validation_file: str | None = None, hp: dict | None = None) -> str:
    with store.session() as s:
        return J.create_job(
            s,
            project_id="p1",
            model=TINY,
            training_file=training_file,
            validation_file=validation_file,
            suffix="fact",
            seed=3,
            hyperparameters=hp or HP,
            method={"type": "supervised", "lora": LORA},
        ).id


def job(store: Store, job_id: str):
    with store.session() as s:
        return training_db.get_job(s, job_id, project_id="p1")


@pytest.mark.parametrize("db", ["sqlite_db", pytest.param("pg_db", marks=pytest.mark.postgres)])
def test_bad_file_fails_in_validating_files(
    db: str, request: pytest.FixtureRequest, blobs: BlobStore, settings: Settings
) -> None:
    sqlite_db: Store = request.getfixturevalue(db)  # the worker's database work, on both backends
    bad = jsonl(fact_examples(3)) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    job_id = create(sqlite_db, upload(sqlite_db, blobs, bad))
    assert Worker(settings, sqlite_db, blobs).run_once()
    j = job(sqlite_db, job_id)
    assert j.status == "failed" and j.error["code"] == "invalid_training_file" and j.error["param"] == "training_file"
    assert "line 4" in j.error["message"] and "assistant" in j.error["message"]
    with sqlite_db.session() as s:
        messages = [e.message for e in training_db.list_events(s, job_id, project_id="p1", after=None, limit=50)[0]]
    assert "Files validated; job queued" not in messages


def greedy(model, tok, question: str) -> str:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=30, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT vs transformers 5.x
def test_worker_trains_checkpoints_and_publishes(
    sqlite_db: Store, blobs: BlobStore, settings: Settings, tiny_model_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_id = upload(sqlite_db, blobs, jsonl(fact_examples(12)))
    valid_id = upload(sqlite_db, blobs, jsonl(fact_examples(4)))
    job_id = create(sqlite_db, train_id, valid_id)
    assert Worker(settings, sqlite_db, blobs).run_once()
    j = job(sqlite_db, job_id)
    assert j.status == "succeeded", j.error
    assert j.fine_tuned_model == f"ft:{TINY}:p1:fact:{job_id}" and j.trained_tokens > 0
    with sqlite_db.session() as s:
        events = [
            FineTuningEventObject.of(e).model_dump()
            for e in training_db.list_events(s, job_id, project_id="p1", after=None, limit=100)[0]
        ]
        ckpts = training_db.list_checkpoints(s, job_id, project_id="p1", after=None, limit=10)[0]
    messages = [e["message"] for e in reversed(events)]
    assert messages[:3] == [
        f"Created fine-tuning job: {job_id}",
        "Files validated; job queued",
        "Fine-tuning job started",
    ]
    assert messages[-1].startswith("The job has successfully completed")
    steps = [e["data"] for e in events if e["type"] == "metrics" and "total_steps" in e["data"]]
    assert len(steps) == 18 and all(d["train_loss"] > 0 and 0 <= d["train_mean_token_accuracy"] <= 1 for d in steps)
    assert [d["step"] for d in steps if "valid_loss" in d] == [
        18,
        17,
        16,
        15,
        14,
        13,
        12,
        11,
        10,
        9,
        8,
        7,
        6,
        5,
        4,
        3,
        2,
        1,
    ]
    assert [c.epoch for c in ckpts] == [6, 5, 4, 3, 2, 1]
    names = {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    }
    assert all(set(c.metrics) == names for c in ckpts) and [c.metrics["step"] for c in ckpts] == [18, 15, 12, 9, 6, 3]
    assert ckpts[0].metrics["full_valid_loss"] < ckpts[-1].metrics["full_valid_loss"]

    # the step-metrics CSV, as OpenAI's result file: a file of the job's project
    shown = job_object(j).model_dump()
    assert shown["result_files"] == [J.result_file_id(job_id)]
    with sqlite_db.session() as s:
        record = files_db.get_file(s, shown["result_files"][0], project_id="p1")
    assert record.purpose == "fine-tune-results" and record.filename == "step_metrics.csv"
    lines = blobs.read(record.blob_key).decode().splitlines()
    assert lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 19))
    assert all(len(line.split(",")) == 5 and "" not in line.split(",") for line in lines[1:])

    # published: the registry finds it for its own project only, as a PEFT folder of safetensors
    import asyncio

    from llmaas.tenancy.types import Principal

    reg = FineTunedModels.from_settings(settings, sqlite_db)
    found = asyncio.run(reg.lookup(j.fine_tuned_model, Principal(project_id="p1")))
    assert found is not None and found.adapter_id == job_id and found.base_model == TINY
    assert (found.adapter_path / "adapter_model.safetensors").exists() and (
        found.adapter_path / "adapter_config.json"
    ).exists()
    assert not (found.adapter_path / "optimizer.safetensors").exists()  # only checkpoints keep the optimizer state
    assert (blobs.local_path(ckpts[0].blob_key) / "optimizer.safetensors").exists()
    assert asyncio.run(reg.lookup(j.fine_tuned_model, Principal(project_id="p2"))) is None
    assert [m.id for m in asyncio.run(reg.list(Principal(project_id="p1")))] == [j.fine_tuned_model]

    # it learned the made-up fact; the base model did not know it
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert ANSWER not in greedy(base, tok, "what is the secret word?")
    tuned = PeftModel.from_pretrained(base, found.adapter_path)
    assert greedy(tuned, tok, "what is the secret word?") == ANSWER


def preference_rows(n: int) -> list[dict]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": ANSWER}],
            "non_preferred_output": [{"role": "assistant", "content": "no idea"}],
        }
        for i in range(n)
    ]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT vs transformers 5.x
def test_dpo_job_validates_preference_rows_and_trains(sqlite_db: Store, blobs: BlobStore, settings: Settings) -> None:
    def dpo_job(data: bytes) -> str:
        with sqlite_db.session() as s:
            return J.create_job(
                s,
                project_id="p1",
                model=TINY,
                training_file=upload(sqlite_db, blobs, data),
                validation_file=None,
                suffix="pref",
                seed=3,
                hyperparameters={**HP, "n_epochs": 2, "beta": 0.5},
                method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.5}}, "lora": LORA},
            ).id

    rows = preference_rows(4)
    bad = jsonl(rows[:2] + [{**rows[2], "non_preferred_output": []}] + rows[3:])
    bad_id = dpo_job(bad)
    good_id = dpo_job(jsonl(rows))
    worker = Worker(settings, sqlite_db, blobs)
    assert worker.run_once() and worker.run_once()
    failed, done = job(sqlite_db, bad_id), job(sqlite_db, good_id)
    assert failed.status == "failed" and failed.error["code"] == "invalid_training_file"
    assert "line 3" in failed.error["message"] and "non_preferred_output" in failed.error["message"]
    assert done.status == "succeeded", done.error
    with sqlite_db.session() as s:
        ckpts = training_db.list_checkpoints(s, good_id, project_id="p1", after=None, limit=10)[0]
    assert [c.epoch for c in ckpts] == [2, 1] and ckpts[0].metrics["train_loss"] < 0.6931


def test_auto_epochs_are_resolved_from_the_file(sqlite_db: Store, blobs: BlobStore, settings: Settings) -> None:
    job_id = create(sqlite_db, upload(sqlite_db, blobs, jsonl(fact_examples(20))), hp={**HP, "n_epochs": "auto"})
    worker = Worker(settings, sqlite_db, blobs)
    with sqlite_db.session() as s:
        claimed = J.claim(s, worker_id=worker.worker_id, lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == job_id
    worker._validate(claimed)
    shown = job_object(job(sqlite_db, job_id)).model_dump()
    assert (
        shown["hyperparameters"]["n_epochs"] == 5 and shown["method"]["supervised"]["hyperparameters"]["n_epochs"] == 5
    )  # 100 // 20
