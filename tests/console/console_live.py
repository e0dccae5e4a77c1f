"""A real `llmaas serve` (tests.support.server) on a free loopback port with the tiny model, for the console's e2e tests.

Auth is on: the server's first-run admin key (printed once on stdout) signs the console in. Unlike tests/e2e's
`serve_llmaas` (always --no-worker), this server runs its fine-tuning worker, which the console's fine-tune test
needs; stop() ends the whole process group (server and worker). If it cannot start because a part of llmaas is not
written yet (ModuleNotFoundError for an llmaas module), the tests skip and say which; any other failure to start
fails them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.server import LlmaasProcess, serve

MISSING_PART = re.compile(r"ModuleNotFoundError: No module named '(llmaas\.[\w.]+)'")


def start_live_server(model_dir: Path, workdir: Path, *, no_auth: bool = False) -> LlmaasProcess:
    """`no_auth=True`: `--no-auth --no-worker` (any key works; no admin key is printed)."""
    config = {
        "models": [{"name": "tiny", "source": str(model_dir), "kind": "chat", "max_model_len": 512, "kv_cache_mb": 32}],
        "usage_flush_s": 0.2,
    }
    only_this_config = {k: None for k in os.environ if k.startswith("LLMAAS_")}
    try:
        return serve(workdir, config, auth=not no_auth, worker=not no_auth, env=only_this_config)
    except pytest.fail.Exception as exc:
        if m := MISSING_PART.search(exc.msg):
            pytest.skip(f"llmaas serve cannot start yet: {m.group(1)} is not written ({m.group(0)})")
        raise


def require(server: LlmaasProcess, path: str, what: str) -> None:
    """Skip (with the reason) while an endpoint this test needs is not served yet."""
    status = server.api("GET", path).status_code
    if status in (404, 405):
        pytest.skip(f"{what}: GET {path} answers HTTP {status} (not served yet)")
