"""load_model: local HF folders (single and sharded), the HF hub cache layout, GGUF conversion cache, bad sources."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmaas.config import ModelSpec, Settings
from llmaas.engine.models import loader
from llmaas.engine.models.loader import ModelSourceError, load_model, resolve_model_dir


def settings(tmp_path: Path) -> Settings:
    # model_cache_dir=None beats conftest's LLMAAS_MODEL_CACHE_DIR (the real models' shared cache): these tests
    # check the default location, data_dir/models.
    return Settings(data_dir=tmp_path / "data", model_cache_dir=None)


def spec(source: str, kind: str = "chat") -> ModelSpec:
    return ModelSpec(name="m", source=source, kind=kind)  # type: ignore[arg-type]


def test_local_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    m = load_model(spec(str(tiny_model_dir)), settings(tmp_path))
    assert m.architecture == "LlamaForCausalLM" and m.source_dir == tiny_model_dir.resolve()
    assert m.config.num_hidden_layers == 2 and m.tokenizer.eos_token_ids == [2]
    assert "model.layers.1.mlp.down_proj.weight" in m.tensors
    assert "lm_head.weight" not in m.tensors and m.config.tie_word_embeddings  # tied: the engine shares the embedding
    assert m.tensors["model.norm.weight"].dtype == torch.float32


def test_sharded_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir, folder)
    full = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(full)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate([names[:half], names[half:]]):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: full[n] for n in part}, str(folder / shard))
        weight_map.update({n: shard for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    m = load_model(spec(str(folder)), settings(tmp_path))
    assert set(full) <= set(m.tensors) and torch.equal(m.tensors[names[-1]], full[names[-1]])

    weight_map[names[0]] = "../evil.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(ModelSourceError, match="outside"):
        load_model(spec(str(folder)), settings(tmp_path))


def _hub_cache(root: Path, repo: str, src: Path) -> None:
    base = root / "hub" / ("models--" + repo.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = base / "snapshots" / rev
    blobs = base / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in src.iterdir():  # real cache layout: snapshot entries are links into blobs/
        blob = blobs / f"blob-{f.name}"
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)


def test_hub_id_from_local_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_cache(tmp_path / "hf", "acme/tiny-chat", tiny_model_dir)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    m = load_model(spec("acme/tiny-chat"), settings(tmp_path))
    assert m.architecture == "LlamaForCausalLM" and "snapshots" in str(m.source_dir)
    assert m.tokenizer.decode(m.tokenizer.encode("hé")) == "hé"
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache"):
        resolve_model_dir(spec("acme/not-there"), settings(tmp_path))


@pytest.mark.parametrize(
    "source, match",
    [
        ("builtin:nope", "unknown built-in model"),
        ("definitely not a model", "not a builtin name"),
        ("../../etc/passwd-ish/../x/y/z", "not a builtin name"),
    ],
)
def test_bad_sources_are_clear_errors(source: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=match):
        resolve_model_dir(spec(source), settings(tmp_path))


def test_refuses_non_gguf_file_and_pickle_only_folder(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x80\x04")
    with pytest.raises(ModelSourceError, match="not a .gguf"):
        resolve_model_dir(spec(str(f)), settings(tmp_path))
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelSourceError, match="no \\*.safetensors"):
        loader.read_safetensors(folder)


def test_gguf_conversion_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    calls = []

    def fake_convert(src: Path, out: Path) -> None:
        calls.append(src)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(loader, "_convert_gguf", fake_convert)
    first = resolve_model_dir(spec(str(gguf)), settings(tmp_path))
    again = resolve_model_dir(spec(str(gguf)), settings(tmp_path))
    assert first == again and len(calls) == 1 and first.parent == tmp_path / "data" / "models"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp dirs left behind
    os.utime(gguf, ns=(1, 1))  # a changed file gets a fresh conversion
    assert resolve_model_dir(spec(str(gguf)), settings(tmp_path)) != first and len(calls) == 2


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    def broken(src: Path, out: Path) -> None:
        (out / "half.safetensors").write_bytes(b"")
        raise RuntimeError("boom")

    monkeypatch.setattr(loader, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        resolve_model_dir(spec(str(gguf)), settings(tmp_path))
    assert list((tmp_path / "data" / "models").iterdir()) == []


def test_builtin_embedding_folder(tmp_path: Path) -> None:
    folder = resolve_model_dir(spec("builtin:all-minilm-l6-v2", "embedding"), settings(tmp_path))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


# --- the real default model (converted once per machine into a shared temp cache) ---------------------


@pytest.fixture(scope="module")
def smollm2_settings() -> Settings:
    root = Path(os.environ.get("LLMAAS_TEST_MODEL_CACHE", Path(tempfile.gettempdir()) / "llmaas-test-models"))
    return Settings(data_dir=root)


@pytest.mark.slow
def test_builtin_smollm2(smollm2_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    m = load_model(spec("builtin:smollm2"), smollm2_settings)
    assert m.architecture == "LlamaForCausalLM" and m.config.num_hidden_layers == 30
    assert m.tensors["model.embed_tokens.weight"].shape == (49152, 576)
    assert m.tensors["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32
    tok = m.tokenizer
    assert 2 in tok.eos_token_ids and tok.token_text(2) == "<|im_end|>"
    assert "".join(tok.token_text(i) for i in tok.encode(" Paris")) == " Paris"
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    assert tok.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")

    def no_convert(src: Path, out: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(loader, "_convert_gguf", no_convert)
    again = load_model(spec("builtin:smollm2"), smollm2_settings)
    assert again.source_dir == m.source_dir
