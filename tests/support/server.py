"""Start real `llmaas` processes for tests, the way users meet them: `serve()` and `LlmaasProcess`.

`serve(root, config, *flags)` writes `config` (settings as a dict; `data_dir` defaults to `root/data`) to
`root/llmaas.yaml`, starts `python -m llmaas serve --config … --host 127.0.0.1 --port 0` in its own process group,
reads the address and the first-run admin key it prints, and polls /ready, failing fast with the process's output if
it dies. `auth=False` adds --no-auth, `worker=False` adds --no-worker; `env` overrides the inherited environment (a
None value removes a variable). `stop()` is SIGTERM to the group, then SIGKILL after a timeout.

What it isn't: a fixture. The test folders wrap it (tests/e2e/conftest.py, tests/console/console_live.py, ...).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

LISTENING = re.compile(r"listening on (http://\S+?) ")
ADMIN_KEY = re.compile(r"admin API key .*?: (sk-\S+)")
START_TIMEOUT_S = float(os.environ.get("LLMAAS_E2E_START_TIMEOUT", "300"))
QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


class LlmaasProcess:
    """One `python -m llmaas …` subprocess (its own process group, so cleanup reaches its children) and its output."""

    def __init__(self, args: list[str], root: Path, env: Mapping[str, str | None] | None = None) -> None:
        self.root, self.data_dir = root, root / "data"
        self.lines: list[str] = []
        self.url: str | None = None
        self.api_key: str | None = None
        merged = {**os.environ, **QUIET_ENV, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmaas", *args], cwd=root, env={k: v for k, v in merged.items() if v is not None},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (m := LISTENING.search(line)):
                self.url = m.group(1)
            if self.api_key is None and (m := ADMIN_KEY.search(line)):
                self.api_key = m.group(1)

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    @property
    def base_url(self) -> str:
        """The OpenAI base_url (…/v1)."""
        return f"{self.url}/v1"

    def api(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        """A request with `key` (default: the admin key it printed) as the bearer token."""
        key = self.api_key if key is None else key
        return httpx.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30, **kw
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.3)  # let the reader drain the last lines
                pytest.fail(f"llmaas exited with {self.proc.returncode}:\n{self.output}")
            if self.url is not None:
                with suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                        return
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"llmaas was not ready after {timeout:.0f} s:\n{self.output}")

    def healthy(self) -> bool:
        try:
            return self.proc.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def group_alive(self) -> bool:
        """Whether any process of its group (e.g. the fine-tuning worker child) still runs."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the group (server and worker), SIGKILL whatever is left after `timeout`."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group, children included (cleanup, also after a failure)."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)  # the group is gone: its output ends
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


def serve(
    root: Path,
    config: dict[str, Any] | None = None,
    *flags: str,
    auth: bool = True,
    worker: bool = True,
    env: Mapping[str, str | None] | None = None,
    wait: bool = True,
) -> LlmaasProcess:
    """Start `llmaas serve` on a free loopback port; with `wait`, return once ready (and, with auth, its admin key)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"data_dir": str(root / "data"), **(config or {})}
    (root / "llmaas.yaml").write_text(yaml.safe_dump(config))
    flags = (*([] if auth else ["--no-auth"]), *([] if worker else ["--no-worker"]), *flags)
    server = LlmaasProcess(
        ["serve", "--config", str(root / "llmaas.yaml"), "--host", "127.0.0.1", "--port", "0", *flags], root, env
    )
    server.data_dir = Path(config["data_dir"])
    if wait:
        server.wait_ready()
        if auth and server.api_key is None:
            server.stop()
            pytest.fail(f"auth is on but the server printed no admin key (fresh data dir?):\n{server.output}")
    return server
