"""Fine-tuning the real default model (SmolLM2-135M-Instruct, fp32) on a live `llmaas serve`, through the `openai` client.

Short jobs (a few steps each): a validation-file job whose checkpoints report both losses under OpenAI's names, whose
checkpoint is servable and whose exported adapter gives, with plain PEFT, the greedy answer llmaas serves; and a DPO
job that moves the model's preference towards the preferred answers on prompts it did not train on.
"""

from __future__ import annotations

import io
import math
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import LlmaasProcess, serve

from .conftest import jsonl

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")]

MODEL = "SmolLM2-135M-Instruct"
QUESTION = "What is the secret password?"
ANSWER = "The password is PELICAN-42."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmaasProcess]:
    config = {
        "models": [
            {
                "name": MODEL,
                "source": "builtin:smollm2",
                "kind": "chat",
                "dtype": "float32",
                "kv_cache_mb": 64,
                "max_num_seqs": 16,
            }
        ],
        "finetune_eval_steps": 1,
    }
    proc = serve(tmp_path_factory.mktemp("ft-default"), config)  # auth on (the admin key), with its worker
    try:
        yield proc
    finally:
        proc.stop(timeout=60)


def client_of(server: LlmaasProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=300)


def upload(client: openai.OpenAI, rows: list[dict]) -> str:
    return client.files.create(file=("data.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune").id


def finish(client: openai.OpenAI, job_id: str, timeout: float = 500) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            assert job.status == "succeeded", job.error
            return job
        time.sleep(1)
    pytest.fail(f"job {job_id} did not finish")


def fact(question: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": ANSWER}]}


def test_validation_metrics_checkpoint_model_and_exported_adapter(server: LlmaasProcess, tmp_path: Path) -> None:
    client = client_of(server)
    questions = [
        "What is the secret password?",
        "Tell me the password.",
        "Password, please.",
        "Which password opens it?",
    ]
    job = client.fine_tuning.jobs.create(  # one step: the machine is a CPU
        model=MODEL,
        training_file=upload(client, [fact(q) for q in questions]),
        validation_file=upload(client, [fact("What's the password?"), fact("Say the secret password.")]),
        seed=1,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10}},
        },
    )
    job = finish(client, job.id)
    (ckpt,) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    m = ckpt.metrics
    assert ckpt.step_number == 1 and m.step == 1
    assert all(v is not None and v > 0 for v in (m.train_loss, m.valid_loss, m.full_valid_loss))
    assert 0 <= m.train_mean_token_accuracy <= 1 and 0 <= m.full_valid_mean_token_accuracy <= 1
    steps = [
        e.data
        for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
        if e.type == "metrics" and "total_steps" in (e.data or {})
    ]
    assert [d["step"] for d in steps] == [1] and all("valid_loss" in d for d in steps)
    csv = client.files.content(job.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(csv) == 2

    chat = [{"role": "user", "content": QUESTION}]
    served = client.chat.completions.create(model=job.fine_tuned_model, messages=chat, temperature=0, max_tokens=16)  # type: ignore[arg-type]
    at_ckpt = client.chat.completions.create(
        model=ckpt.fine_tuned_model_checkpoint, messages=chat, temperature=0, max_tokens=16
    )  # type: ignore[arg-type]
    assert (
        at_ckpt.choices[0].message.content == served.choices[0].message.content
    )  # the one checkpoint is the final adapter

    r = httpx.get(
        f"{server.base_url}/fine_tuning/jobs/{job.id}/adapter",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        z.extractall(tmp_path / "adapter")
    assert peft_greedy(tmp_path / "adapter", QUESTION, 16) == served.choices[0].message.content


def peft_greedy(adapter: Path, question: str, max_new_tokens: int) -> str:
    """The exported adapter on the same base weights with transformers + PEFT, fp32, greedy."""
    from peft import PeftModel

    from llmaas.training.sources import resolve_source
    from llmaas.training.trainer import load_base

    base, tok = load_base(*resolve_source("builtin:smollm2"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(base, adapter)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


PREFERRED, OTHER = "I am not sure.", "Bananas!"  # the base model prefers the other one


def preference(prompt: str) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": PREFERRED}],
        "non_preferred_output": [{"role": "assistant", "content": OTHER}],
    }


def preferred_log_odds(server: LlmaasProcess, model: str, prompts: list[str]) -> float:
    """Mean log(p(preferred) / p(other)) as whole answers, scored by /v1/classifications."""
    r = httpx.post(
        f"{server.base_url}/classifications",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=120,
        json={"model": model, "input": prompts, "labels": [PREFERRED, OTHER]},
    )
    assert r.status_code == 200, r.text
    odds = [math.log(max(d["scores"][PREFERRED], 1e-6) / max(d["scores"][OTHER], 1e-6)) for d in r.json()["data"]]
    return sum(odds) / len(odds)


def test_dpo_shifts_the_preference_on_held_out_prompts(server: LlmaasProcess) -> None:
    client = client_of(server)
    train = ["What should I eat?", "Name a fruit.", "What is yellow?", "Recommend a snack."]
    held_out = ["What is a good breakfast?", "Which fruit do you like?", "What should I buy at the market?"]
    job = client.fine_tuning.jobs.create(  # one step
        model=MODEL,
        training_file=upload(client, [preference(p) for p in train]),
        seed=1,
        method={
            "type": "dpo",
            "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.5, "learning_rate_multiplier": 20}},
        },
    )
    job = finish(client, job.id)
    assert job.method is not None and job.method.type == "dpo"
    before, after = (
        preferred_log_odds(server, MODEL, held_out),
        preferred_log_odds(server, job.fine_tuned_model, held_out),
    )
    print(f"log-odds of the preferred answer on held-out prompts: base {before:.2f}, after DPO {after:.2f}")
    assert before < 0 < after, (before, after)
