"""The worker in-process: validation failures, a full run (events, checkpoints, adapter), and that it learned."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from llmaas.config import Settings
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.training import filestore
from llmaas.training import jobs as J
from llmaas.training.registry import FineTunedModels
from llmaas.training.worker import Worker

from .conftest import ANSWER, TINY, fact_examples, jsonl

HP = {"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 50.0, "learning_rate": 1e-2}
LORA = {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def upload(store: Store, blobs: BlobStore, data: bytes, project: str = "p1") -> str:
    with store.session() as s:
        return filestore.create_file(s, blobs, io.BytesIO(data), project_id=project, purpose="fine-tune", filename="../../etc/x.jsonl").id


def create(store: Store, training_file: str, validation_file: str | None = None, hp: dict | None = None) -> str:
    with store.session() as s:
        return J.create_job(
            s, project_id="p1", model=TINY, training_file=training_file, validation_file=validation_file,
            suffix="fact", seed=3, hyperparameters=hp or HP, method={"type": "supervised", "lora": LORA},
        ).id


def job(store: Store, job_id: str):
    with store.session() as s:
        return J.get_job(s, job_id, project_id="p1")


@pytest.mark.parametrize("db", ["sqlite_db", pytest.param("pg_db", marks=pytest.mark.postgres)])
def test_bad_file_fails_in_validating_files(db: str, request: pytest.FixtureRequest, blobs: BlobStore, settings: Settings) -> None:
    sqlite_db: Store = request.getfixturevalue(db)  # the worker's database work, on both backends
    bad = jsonl(fact_examples(3)) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    job_id = create(sqlite_db, upload(sqlite_db, blobs, bad))
    assert Worker(settings, sqlite_db, blobs).run_once()
    j = job(sqlite_db, job_id)
    assert j.status == "failed" and j.error["code"] == "invalid_training_file" and j.error["param"] == "training_file"
    assert "line 4" in j.error["message"] and "assistant" in j.error["message"]
    with sqlite_db.session() as s:
        messages = [e.message for e in J.list_events(s, job_id, project_id="p1", after=None, limit=50)[0]]
    assert "Files validated; job queued" not in messages


def greedy(model, tok, question: str) -> str:
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=30, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT vs transformers 5.x
def test_worker_trains_checkpoints_and_publishes(sqlite_db: Store, blobs: BlobStore, settings: Settings, tiny_model_dir: Path) -> None:
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
        events = [J.event_to_dict(e) for e in J.list_events(s, job_id, project_id="p1", after=None, limit=100)[0]]
        ckpts = J.list_checkpoints(s, job_id, project_id="p1", after=None, limit=10)[0]
    messages = [e["message"] for e in reversed(events)]
    assert messages[:3] == [f"Created fine-tuning job: {job_id}", "Files validated; job queued", "Fine-tuning job started"]
    assert messages[-1].startswith("The job has successfully completed")
    steps = [e["data"] for e in events if e["type"] == "metrics" and "total_steps" in e["data"]]
    assert len(steps) == 18 and all(d["train_loss"] > 0 for d in steps)
    assert [c.epoch for c in ckpts] == [6, 5, 4, 3, 2, 1] and all("valid_loss" in c.metrics for c in ckpts)
    assert ckpts[0].metrics["valid_loss"] < ckpts[-1].metrics["valid_loss"]

    # published: the registry finds it for its own project only, as a PEFT folder of safetensors
    import asyncio

    from llmaas.tenancy.types import Principal

    reg = FineTunedModels.from_settings(settings, sqlite_db)
    found = asyncio.run(reg.lookup(j.fine_tuned_model, Principal(project_id="p1")))
    assert found is not None and found.adapter_id == job_id and found.base_model == TINY
    assert (found.adapter_path / "adapter_model.safetensors").exists() and (found.adapter_path / "adapter_config.json").exists()
    assert asyncio.run(reg.lookup(j.fine_tuned_model, Principal(project_id="p2"))) is None
    assert [m.id for m in asyncio.run(reg.list(Principal(project_id="p1")))] == [j.fine_tuned_model]

    # it learned the made-up fact; the base model did not know it
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert ANSWER not in greedy(base, tok, "what is the secret word?")
    tuned = PeftModel.from_pretrained(base, found.adapter_path)
    assert greedy(tuned, tok, "what is the secret word?") == ANSWER
