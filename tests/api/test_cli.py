"""The serve/models/chat commands: help texts, how flags become settings, --local listing (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmaas.cli import cli
from llmaas.config import Settings


@pytest.mark.parametrize("command", ["serve", "models", "chat"])
def test_help(command: str) -> None:
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_serve_flags_become_settings(monkeypatch: Any, tmp_path: Path) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("llmaas.server.run", seen.append)
    config = tmp_path / "c.yaml"
    config.write_text("default_max_tokens: 99\n")
    r = CliRunner().invoke(
        cli,
        [
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--model",
            "a=/models/a",
            "--model",
            "/models/b.gguf",
            "--no-auth",
            "--no-worker",
        ],
    )
    assert r.exit_code == 0, r.output
    s = seen[0]
    assert (s.port, s.data_dir, s.auth, s.start_worker, s.default_max_tokens) == (0, tmp_path, False, False, 99)
    assert [(m.name, m.source, m.kind) for m in s.models] == [
        ("a", "/models/a", "chat"),
        ("b", "/models/b.gguf", "chat"),
        ("all-MiniLM-L6-v2", "builtin:all-minilm-l6-v2", "embedding"),
    ]
    assert "authentication is OFF" in r.output


def test_serve_dtype_sets_the_chat_models_dtype(monkeypatch: Any, tmp_path: Path) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("llmaas.server.run", seen.append)
    base = ["serve", "--data-dir", str(tmp_path), "--port", "0"]
    for extra in (["--dtype", "bfloat16"], ["--dtype", "bfloat16", "--model", "a=/models/a"]):
        r = CliRunner().invoke(cli, [*base, *extra])
        assert r.exit_code == 0, r.output
    default, flagged = seen
    assert [(m.name, m.dtype) for m in default.chat_models] == [("SmolLM2-135M-Instruct", "bfloat16")]
    assert [(m.name, m.dtype) for m in flagged.chat_models] == [("a", "bfloat16")]
    assert all(m.dtype == "auto" for m in default.embedding_models)  # embedding models keep theirs
    r = CliRunner().invoke(cli, [*base, "--dtype", "float64"])
    assert r.exit_code != 0 and "float64" in r.output


def test_serve_refuses_bad_settings(monkeypatch: Any) -> None:
    monkeypatch.setattr("llmaas.server.run", lambda s: None)
    r = CliRunner().invoke(cli, ["serve", "--model", "a=/x", "--model", "a=/y"])
    assert r.exit_code != 0 and "unique" in r.output


def test_models_local(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["models", "--local"])
    assert r.exit_code == 0, r.output
    assert "SmolLM2-135M-Instruct\tchat\tbuiltin:smollm2" in r.output and "all-MiniLM-L6-v2\tembedding" in r.output


def test_models_unreachable_server() -> None:
    r = CliRunner().invoke(cli, ["models", "--base-url", "http://127.0.0.1:9"])
    assert r.exit_code != 0 and "cannot reach" in r.output
