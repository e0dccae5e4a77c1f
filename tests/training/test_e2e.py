"""End to end on a live `llmaas serve` (with its own worker process), driven by the official `openai` client.

The tiny random model learns a made-up fact and then answers with it through /v1/chat/completions on the same
running server (no restart), while the base model does not; the fine-tuned model is listed for its project only;
/v1/classifications gets more accurate after fine-tuning on labelled chat examples built here.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import serve

from .conftest import ANSWER, fact_examples, jsonl

POSITIVE = ["I love it", "great stuff", "so good", "love this", "really great", "good job", "wonderful", "great fun"]
NEGATIVE = ["I hate it", "awful stuff", "so bad", "hate this", "really awful", "bad job", "terrible", "awful mess"]
LABELS = ["positive", "negative"]


@dataclass
class Server:
    base_url: str  # …/v1
    key_a: str  # project proj-a
    key_b: str  # project proj-b
    root: Path  # a scratch folder of the test
    model_dir: Path  # the base model's weights

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key_a, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ft-e2e")
    config = {
        "data_dir": str(root / "data"),
        "models": [
            {"name": "tiny", "source": str(tiny_model_dir), "kind": "chat", "kv_cache_mb": 16, "max_num_seqs": 16}
        ],
        "default_max_tokens": 16,
    }
    proc = serve(root, config)  # auth on, with its fine-tuning worker
    try:
        keys = []
        for project in ("proj-a", "proj-b"):
            r = proc.api("POST", "/admin/projects", json={"id": project, "name": project})
            assert r.status_code == 200, r.text
            r = proc.api("POST", "/admin/keys", json={"project_id": project, "name": "test"})
            assert r.status_code == 200, r.text
            keys.append(r.json()["key"])
        yield Server(proc.base_url, *keys, root=root, model_dir=tiny_model_dir)
    finally:
        proc.stop(timeout=60)  # the server stops its worker child too


def finish(client: openai.OpenAI, job_id: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish")


def tune(client: openai.OpenAI, rows: list[dict], epochs: int, suffix: str, valid: list[dict] | None = None) -> Any:
    f = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune")
    v = (
        client.files.create(file=("valid.jsonl", io.BytesIO(jsonl(valid))), purpose="fine-tune").id
        if valid
        else openai.NOT_GIVEN
    )
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=f.id,
        validation_file=v,
        suffix=suffix,
        seed=1,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 4, "learning_rate_multiplier": 50}},
            "lora": {"rank": 16, "alpha": 32},
        },  # type: ignore[typeddict-unknown-key]
    )
    job = finish(client, job.id)
    assert job.status == "succeeded", job.error
    return job


def test_fine_tuned_model_answers_with_the_fact_at_once(server: Server) -> None:
    client = server.client()
    question = [{"role": "user", "content": "what is the secret word?"}]
    before = client.chat.completions.create(model="tiny", messages=question, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert ANSWER not in (before.choices[0].message.content or "")

    job = tune(client, fact_examples(12), epochs=6, suffix="fact")
    assert job.fine_tuned_model == f"ft:tiny:proj-a:fact:{job.id}" and job.trained_tokens > 0
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    after = client.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert after.choices[0].message.content == ANSWER
    again = client.chat.completions.create(model="tiny", messages=question, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert again.choices[0].message.content == before.choices[0].message.content  # the base model is untouched
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [18, 15, 12, 9, 6, 3]
    assert (
        checkpoints[0].metrics.train_loss is not None and checkpoints[0].metrics.train_mean_token_accuracy is not None
    )

    # every checkpoint is servable by its name; the last one is the final adapter
    last, first = checkpoints[0].fine_tuned_model_checkpoint, checkpoints[-1].fine_tuned_model_checkpoint
    assert last == f"{job.fine_tuned_model}:ckpt-step-18"
    at_last = client.chat.completions.create(model=last, messages=question, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert at_last.choices[0].message.content == ANSWER and at_last.model == last
    client.chat.completions.create(model=first, messages=question, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert client.models.retrieve(first).id == first
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"{job.fine_tuned_model}:ckpt-step-99", messages=question, max_tokens=4)  # type: ignore[arg-type]

    # the step-metrics result file
    (result,) = job.result_files
    csv_lines = client.files.content(result).text.splitlines()
    assert (
        csv_lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(csv_lines) == 19
    )

    # the adapter, taken away: a PEFT zip whose greedy answer is what llmaas serves
    r = httpx.get(
        f"{server.base_url}/fine_tuning/jobs/{job.id}/adapter",
        headers={"Authorization": f"Bearer {server.key_a}"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
        assert json.loads(z.read("adapter_config.json"))["base_model_name_or_path"] == "tiny"  # no server path
        z.extractall(server.root / "exported")
    assert exported_greedy(server, "what is the secret word?") == after.choices[0].message.content

    # another project sees none of it: not the model, not the job, not the file
    other = server.client(server.key_b)
    assert job.fine_tuned_model not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=4)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=last, messages=question, max_tokens=4)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert (
        httpx.get(
            f"{server.base_url}/fine_tuning/jobs/{job.id}/adapter", headers={"Authorization": f"Bearer {server.key_b}"}
        ).status_code
        == 404
    )
    with pytest.raises(openai.NotFoundError):
        other.files.content(result)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(job.training_file)


def exported_greedy(server: Server, question: str) -> str:
    """The exported adapter on the base weights with plain transformers + PEFT (fp32, greedy)."""
    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.model_dir)
    base = AutoModelForCausalLM.from_pretrained(server.model_dir, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(base, server.root / "exported")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def accuracy(server: Server, model: str) -> float:
    texts = POSITIVE + NEGATIVE
    r = httpx.post(
        f"{server.base_url}/classifications",
        json={"model": model, "input": texts, "labels": LABELS},
        headers={"Authorization": f"Bearer {server.key_a}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(texts)))
    assert all(abs(sum(d["scores"].values()) - 1) < 1e-3 for d in data)
    truth = ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    return sum(d["label"] == t for d, t in zip(data, truth)) / len(texts)


def test_classification_improves_after_fine_tuning(server: Server) -> None:
    client = server.client()
    base = accuracy(server, "tiny")
    rows = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": label}]}
        for t, label in [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE]
    ]
    job = tune(client, rows, epochs=8, suffix="sentiment", valid=rows)
    tuned = accuracy(server, job.fine_tuned_model)
    # each checkpoint scored the validation file as /v1/classifications scores labels: the same accuracy
    last = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    metrics = last.metrics.model_dump()
    assert metrics["valid_classification_accuracy"] == pytest.approx(tuned)
    matrix = metrics["valid_confusion_matrix"]
    assert matrix["labels"] == ["negative", "positive"] and sum(map(sum, matrix["matrix"])) == len(rows)
    auth = {"Authorization": f"Bearer {server.key_a}"}
    for body, param in [
        ({"labels": ["a", "a"]}, "labels"),
        ({"labels": ["a"]}, "labels"),
        ({"labels": [str(i) for i in range(17)]}, "labels"),
        ({"labels": ["a", "b"], "input": ["x"] * 65}, "input"),
        ({"labels": ["a", "b"], "model": job.fine_tuned_model + "x"}, "model"),
    ]:
        r = httpx.post(
            f"{server.base_url}/classifications",
            json={"model": "tiny", "input": ["x"], **body},
            headers=auth,
            timeout=60,
        )
        assert r.status_code in (400, 404) and r.json()["error"]["param"] == param, r.text
    other = httpx.post(
        f"{server.base_url}/classifications",
        json={"model": job.fine_tuned_model, "input": ["x"], "labels": LABELS},
        headers={"Authorization": f"Bearer {server.key_b}"},
        timeout=60,
    )
    assert other.status_code == 404
    print(f"classification accuracy: base {base:.2f}, fine-tuned {tuned:.2f}")
    assert tuned > base and tuned >= 0.75, (base, tuned)


def test_cli_create_and_watch(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(jsonl(fact_examples(4)))
    args = [
        sys.executable,
        "-m",
        "llmaas",
        "finetune",
        "create",
        "--file",
        str(data),
        "--model",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--suffix",
        "cli",
        "--watch",
        "--base-url",
        server.base_url,
    ]
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env={**os.environ, "LLMAAS_API_KEY": server.key_b}
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.splitlines()[0]
    assert job_id.startswith("ftjob-") and "status: succeeded" in out.stdout
    assert f"fine_tuned_model: ft:tiny:proj-b:cli:{job_id}" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "llmaas", "finetune", "watch", job_id, "--base-url", server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMAAS_API_KEY": server.key_a},
    )
    assert bad.returncode != 0 and "No fine-tuning job found" in bad.stderr
