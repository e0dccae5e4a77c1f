"""The tenancy pieces of one server process, built from settings: store, key directory, auth, limiter, usage, meter.

`build_runtime` (llmaas/services.py) calls `Tenancy.from_settings(settings, store=…)` and hands `store`, `auth`, `meter` to
`create_app`; `start()` / `close()` run in the app's lifespan (close flushes buffered usage: nothing is lost on a
graceful stop). With `settings.auth` false, `auth` is None (every request is the local admin) but metering stays on.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmaas.config import Settings
from llmaas.store.db import Store
from llmaas.tenancy import keys
from llmaas.tenancy.auth import Authenticator
from llmaas.tenancy.keys import KeyDirectory
from llmaas.tenancy.limits import Limiter, make_limiter
from llmaas.tenancy.meter import TenancyMeter
from llmaas.tenancy.usage import UsageWriter


@dataclass
class Tenancy:
    store: Store
    directory: KeyDirectory
    auth: Authenticator | None
    limiter: Limiter
    usage: UsageWriter
    meter: TenancyMeter
    bootstrap_key: str | None = None  # the first admin key's secret, for `llmaas serve` to print once to stdout

    @classmethod
    def from_settings(
        cls, settings: Settings, *, store: Store | None = None, upgrade: bool = True, bootstrap: bool = True
    ) -> Tenancy:
        store = store or Store.from_settings(settings)
        if upgrade:
            store.upgrade()
        directory = KeyDirectory(store)
        limiter = make_limiter(settings)
        usage = UsageWriter(store, flush_s=settings.usage_flush_s)
        meter = TenancyMeter(store=store, directory=directory, limiter=limiter, usage=usage)
        auth = Authenticator(directory) if settings.auth else None
        secret = keys.bootstrap(store) if (settings.auth and bootstrap) else None
        return cls(store, directory, auth, limiter, usage, meter, secret)

    async def start(self) -> None:
        self.usage.start()

    async def close(self) -> None:
        """Flush usage, then release connections (call once, at shutdown)."""
        await self.usage.close()
        await self.limiter.close()
        self.store.close()
