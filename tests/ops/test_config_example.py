"""deploy/llmaas.example.yaml loads, documents every setting, and layers under env and CLI as the docs say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llmaas.config import ModelSpec, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "llmaas.example.yaml"


def test_example_config_loads() -> None:
    s = load_settings(EXAMPLE)
    assert [m.name for m in s.models] == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    chat = s.chat_models[0]
    assert chat.max_model_len == 2048 and chat.kv_cache_mb == 512 and chat.allow_adapters
    assert s.embedding_models[0].source == "builtin:all-minilm-l6-v2"
    assert s.log_json and s.auth and s.environment == "production"


def test_example_mentions_every_setting() -> None:
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"^\s*#?\s*-?\s*([a-z_]+):", text, flags=re.M))
    missing = [f for f in list(Settings.model_fields) + list(ModelSpec.model_fields) if f not in keys]
    assert not missing, f"deploy/llmaas.example.yaml does not mention: {missing}"


def test_cli_flags_over_file_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMAAS_PORT", "7000")
    monkeypatch.setenv("LLMAAS_DEFAULT_MAX_TOKENS", "99")
    s = load_settings(EXAMPLE)
    assert s.port == 8000  # the file beats the environment
    assert s.default_max_tokens == 512
    assert load_settings(EXAMPLE, port=9000).port == 9000  # a flag beats the file
    monkeypatch.setenv("LLMAAS_LOG_LEVEL", "debug")
    assert load_settings(EXAMPLE).log_level == "info"


def test_toml_equivalent(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    lines = []
    for k, v in data.items():
        if k in ("models", "limits"):
            continue
        lines.append(f"{k} = {_toml(v)}")
    lines.append("[limits]")
    lines += [f"{k} = {_toml(v)}" for k, v in data["limits"].items()]
    for m in data["models"]:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml(v)}" for k, v in m.items()]
    p = tmp_path / "llmaas.toml"
    p.write_text("\n".join(lines))
    assert load_settings(p) == load_settings(EXAMPLE)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v) + '"'
