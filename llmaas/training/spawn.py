"""The fine-tuning worker that `llmaas serve` runs beside itself: a child process, started and stopped with the app.

The child gets the server's exact settings (as JSON in LLMAAS_WORKER_SETTINGS, above anything else it reads) and
the server's pid, and exits when that parent is gone, so a killed server never leaves an orphan training. Training
never runs in the server's event loop. A component of `create_app` (start() / close()).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

SETTINGS_ENV = "LLMAAS_WORKER_SETTINGS"


class WorkerProcess:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {**os.environ, SETTINGS_ENV: self.settings.model_dump_json()}
        args = [sys.executable, "-m", "llmaas", "worker", "--parent-pid", str(os.getpid())]
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: the worker stops between steps and hands its job back
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
