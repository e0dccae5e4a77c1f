"""A real `llmaas serve` subprocess on a free loopback port with the tiny model, for the console's e2e tests.

Auth is on: the server's first-run admin key (printed once on stdout) signs the console in. Unlike tests/e2e's
`serve_llmaas` (always --no-worker), this server runs its fine-tuning worker, which the console's fine-tune test
needs; it starts in its own process group, and stop() ends the whole group (server and worker). If it cannot
start because a part of llmaas is not written yet (ModuleNotFoundError for an llmaas module), the tests skip and
say which; any other failure to start fails them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

LISTENING = re.compile(r"listening on (http://\S+?) ")
ADMIN_KEY = re.compile(r"first admin API key[^:]*:\s*(sk-\S+)")
MISSING_PART = re.compile(r"ModuleNotFoundError: No module named '(llmaas\.[\w.]+)'")


@dataclass
class LiveServer:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    admin_key: str | None = None

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def api(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        key = self.admin_key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def require(self, path: str, what: str) -> None:
        """Skip (with the reason) while an endpoint this test needs is not served yet."""
        status = self.api("GET", path).status_code
        if status in (404, 405):
            pytest.skip(f"{what}: GET {path} answers HTTP {status} (not served yet)")

    def stop(self) -> None:
        """SIGTERM to the process group (server + worker), SIGKILL after 30 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker child that outlived its server
        except ProcessLookupError:
            pass


def start_live_server(model_dir: Path, workdir: Path, *, no_auth: bool = False, start_timeout: float = 180) -> LiveServer:
    """`no_auth=True`: `--no-auth --no-worker` (any key works; no admin key is printed)."""
    config = {
        "models": [{"name": "tiny", "source": str(model_dir), "kind": "chat", "max_model_len": 512, "kv_cache_mb": 32}],
        "data_dir": str(workdir / "data"),
        "usage_flush_s": 0.2,
    }
    cfg = workdir / "llmaas.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("LLMAAS_")}  # only this config counts
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmaas", "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", "0",
         *(["--no-auth", "--no-worker"] if no_auth else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir, start_new_session=True,
    )  # fmt: skip
    server = LiveServer(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.lines.append(line)
            if server.url is None and (m := LISTENING.search(line)):
                server.url = m.group(1)
            if server.admin_key is None and (m := ADMIN_KEY.search(line)):
                server.admin_key = m.group(1)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + start_timeout
    while True:
        if proc.poll() is not None:
            time.sleep(0.3)  # let the pump read the last lines
            out = server.output()
            if m := MISSING_PART.search(out):
                pytest.skip(f"llmaas serve cannot start yet: {m.group(1)} is not written ({m.group(0)})")
            pytest.fail(f"llmaas serve exited with {proc.returncode}:\n{out}")
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"llmaas serve was not ready in {start_timeout:.0f} s:\n{server.output()}")
        if server.url:
            try:
                if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    if server.admin_key is None and not no_auth:
        server.stop()
        pytest.fail(f"llmaas serve printed no first admin key (fresh data dir):\n{server.output()}")
    return server
