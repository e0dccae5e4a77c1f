"""The Batch API's meter on SQLite and PostgreSQL: the project's budget like interactive requests, the batch rate
limit instead of the interactive one, usage handed back for the line's own transaction, refunds."""

from __future__ import annotations

import asyncio

import pytest

from llmaas.errors import QuotaExceeded, RateLimited
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store
from llmaas.tenancy import keys
from llmaas.tenancy.auth import Authenticator
from llmaas.tenancy.batch_meter import BatchMeter
from llmaas.tenancy.keys import KeyDirectory
from llmaas.tenancy.limits import InProcessLimiter
from llmaas.tenancy.meter import TenancyMeter, month_period
from llmaas.tenancy.usage import UsageWriter


def test_batch_lines_spend_the_budget_not_the_interactive_rate(store: Store) -> None:
    async def run() -> None:
        with store.session() as s:
            tenancy_db.create_project(s, project_id="acme", name="Acme", rpm=1, monthly_token_budget=300)
        _row, secret = keys.create_key(store, project_id="acme", name="a")
        principal = await Authenticator(KeyDirectory(store)).authenticate(f"Bearer {secret}")
        tenancy = TenancyMeter(
            store=store, directory=KeyDirectory(store), limiter=InProcessLimiter(), usage=UsageWriter(store)
        )
        batch = BatchMeter(tenancy, rpm=2, tpm=None)
        period = month_period()

        line = batch.line()  # the interactive rpm of 1 does not apply to batch lines; the batch rpm of 2 does
        a = await line.admit(principal, model="m", route="/v1/embeddings", request_id="a", tokens=100)
        b = await batch.line().admit(principal, model="m", route="/v1/embeddings", request_id="b", tokens=100)
        with pytest.raises(RateLimited):
            await batch.line().admit(principal, model="m", route="/v1/embeddings", request_id="c", tokens=1)
        await tenancy.admit(
            principal, model="m", route="/v1/embeddings", request_id="i", tokens=50
        )  # interactive: own rate
        with store.session() as s:
            assert (
                tenancy_db.budget_used(s, scope="project:acme", period=period) == 250
            )  # reserved before anything runs

        await line.settle(a, prompt_tokens=40, completion_tokens=0, status=200, latency_s=0.1)
        (settled,) = line.settlements
        assert settled.usage["route"] == "batch:/v1/embeddings" and settled.usage["prompt_tokens"] == 40
        assert settled.budget() == (["project:acme"], period, -60)  # only scopes with a budget are charged
        assert tenancy.usage.pending == 0  # not queued: the runner writes it with the line
        await batch.refund(settled)  # the line was not recorded: its whole reservation comes back
        with store.session() as s:
            assert tenancy_db.budget_used(s, scope="project:acme", period=period) == 150
        with pytest.raises(QuotaExceeded):  # 150 used of 300: a line reserving 200 cannot overspend
            await (
                BatchMeter(tenancy, rpm=None, tpm=None)
                .line()
                .admit(principal, model="m", route="/v1/embeddings", request_id="d", tokens=200)
            )
        assert b.route == "batch:/v1/embeddings"

    asyncio.run(run())
