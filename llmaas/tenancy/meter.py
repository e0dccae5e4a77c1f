"""`TenancyMeter`: the `Meter` the serving layer calls around every model request (`app.state.meter`).

admit: look up the key's and project's limits (cached), take requests + tokens (prompt + max_tokens × n) from the
rate limiter in one atomic step, then charge the monthly budget with one conditional UPDATE; refusal → 429
(`rate_limit_exceeded` or `insufficient_quota`) with `Retry-After` and `x-ratelimit-*` headers, and nothing stays
reserved. A request that alone reserves more than a tokens-per-minute limit is a 400 `request_too_large` instead
(no wait would let it through). settle: correct the token reservation to the actual count (limiter window and budget) and queue one usage
record; it never raises (it runs in the serving layer's `finally`, also for dropped streams).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from llmaas.errors import QuotaExceeded, RateLimited, RequestTooLarge
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store, now
from llmaas.tenancy.keys import KeyDirectory
from llmaas.tenancy.limits import BucketState, Check, Limiter, ratelimit_headers
from llmaas.tenancy.types import Principal, Reservation
from llmaas.tenancy.usage import UsageWriter

log = logging.getLogger("llmaas.meter")


def month_period(at: dt.datetime | None = None) -> str:
    at = at or dt.datetime.now(dt.UTC)
    return at.strftime("%Y-%m")


def month_start(at: dt.datetime | None = None) -> int:
    at = at or dt.datetime.now(dt.UTC)
    return int(dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC).timestamp())


def seconds_to_next_month(at: dt.datetime | None = None) -> int:
    at = at or dt.datetime.now(dt.UTC)
    nxt = dt.datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=dt.UTC)
    return max(1, math.ceil((nxt - at).total_seconds()))


@dataclass(frozen=True, slots=True)
class _Scope:
    """One level a request is limited at (`key:<id>` or `project:<id>`) and its limits there (None = none)."""

    name: str
    rpm: int | None
    tpm: int | None
    budget: int | None


@dataclass(slots=True)
class _Ticket:
    tpm_windows: list[tuple[str, int]] = field(default_factory=list)  # (bucket, window start) to correct
    budget_scopes: list[str] = field(default_factory=list)
    period: str = ""
    settled: bool = False


def _tightest(states: list[BucketState]) -> BucketState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset_ms)) if states else None


class TenancyMeter:
    def __init__(self, *, store: Store, directory: KeyDirectory, limiter: Limiter, usage: UsageWriter) -> None:
        self.store = store
        self.directory = directory
        self.limiter = limiter
        self.usage = usage

    # --- admission -----------------------------------------------------------------------------------------

    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        tokens = max(0, int(tokens))
        started = time.monotonic()
        try:
            return await self._admit(principal, model=model, route=route, request_id=request_id, tokens=tokens)
        except (RateLimited, QuotaExceeded) as exc:
            # A refused request is still a request: it gets its usage record (0 tokens, 429).
            self._record(principal, model, route, request_id, 0, 0, exc.status, time.monotonic() - started)
            raise

    async def _admit(
        self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int
    ) -> Reservation:
        limits = await self.directory.limits(principal.key_id, principal.project_id)
        scopes: list[_Scope] = []
        if principal.key_id is not None:
            scopes.append(_Scope(f"key:{principal.key_id}", limits.key_rpm, limits.key_tpm, limits.key_budget))
        scopes.append(
            _Scope(f"project:{principal.project_id}", limits.project_rpm, limits.project_tpm, limits.project_budget)
        )
        ticket = _Ticket()
        headers = await self._take_rate(scopes, tokens, model, ticket)
        await self._charge_budgets(scopes, tokens, ticket, headers)
        return Reservation(principal, model, tokens, request_id, route, headers=headers, ticket=ticket)

    async def _take_rate(self, scopes: list[_Scope], tokens: int, model: str, ticket: _Ticket) -> dict[str, str]:
        """Take one request and `tokens` from every rpm/tpm bucket at once, or raise RateLimited; the headers to send."""
        checks: list[Check] = []
        for scope in scopes:
            if scope.rpm is not None:
                checks.append(Check(f"rpm:{scope.name}", scope.rpm, 1))
            if scope.tpm is not None:
                if tokens > scope.tpm:  # waiting cannot help, so a 400 (retrying clients would loop on a 429)
                    raise RequestTooLarge(
                        f"Request too large for {model}: it reserves {tokens} tokens (prompt + max_tokens × n) but "
                        f"the limit is {scope.tpm} tokens per minute. Lower max_tokens or n.",
                        param="max_tokens",
                    )
                checks.append(Check(f"tpm:{scope.name}", scope.tpm, tokens))
        if not checks:
            return {}
        decision = await self.limiter.acquire(checks)
        req_states = [s for c, s in zip(checks, decision.states) if c.bucket.startswith("rpm:")]
        tok_states = [s for c, s in zip(checks, decision.states) if c.bucket.startswith("tpm:")]
        headers = ratelimit_headers(_tightest(req_states), _tightest(tok_states))
        if not decision.allowed:
            blocking = decision.blocking(checks)
            wait_s = max(1, math.ceil((blocking.reset_ms if blocking else 1000) / 1000))
            kind = "requests" if blocking is None or blocking.bucket.startswith("rpm:") else "tokens"
            unit = "rpm" if kind == "requests" else "tpm"
            used = blocking.used if blocking else 0
            limit = blocking.limit if blocking else 0
            raise RateLimited(
                f"Rate limit reached for {kind} per minute ({unit}) on {model}: Limit {limit}, Used {used}. "
                f"Please try again in {wait_s}s.",
                retry_after=wait_s,
                headers=headers,
            )
        ticket.tpm_windows = [
            (c.bucket, s.window) for c, s in zip(checks, decision.states) if c.bucket.startswith("tpm:")
        ]
        return headers

    async def _charge_budgets(
        self, scopes: list[_Scope], tokens: int, ticket: _Ticket, headers: dict[str, str]
    ) -> None:
        """Charge every monthly budget or none; on refusal give the tokens back to the rate limiter and raise."""
        budgets = [(scope.name, scope.budget) for scope in scopes if scope.budget is not None]
        if not budgets:
            return
        period = month_period()
        refused = await asyncio.to_thread(self._charge, budgets, period, tokens)
        if refused is not None:
            await self._release(ticket, -tokens)
            raise QuotaExceeded(
                "You exceeded your current quota: the monthly token budget of this "
                f"{'key' if refused.startswith('key:') else 'project'} is used up. Ask your llmaas administrator.",
                retry_after=seconds_to_next_month(),
                headers=headers,
            )
        ticket.budget_scopes, ticket.period = [name for name, _ in budgets], period

    def _charge(self, budgets: list[tuple[str, int]], period: str, tokens: int) -> str | None:
        with self.store.session() as s:
            refused = tenancy_db.charge_budget(s, scopes=budgets, period=period, tokens=tokens)
            if refused is not None:
                s.rollback()  # all or nothing: undo charges to the scopes before the refusing one
            return refused

    async def _release(self, ticket: _Ticket, delta: int) -> None:
        for bucket, window in ticket.tpm_windows:
            await self.limiter.adjust(bucket, window, delta)

    # --- settlement ----------------------------------------------------------------------------------------

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        prompt_tokens, completion_tokens = max(0, int(prompt_tokens)), max(0, int(completion_tokens))
        ticket = reservation.ticket
        if isinstance(ticket, _Ticket):
            if ticket.settled:
                return
            ticket.settled = True
        try:
            self._record(
                reservation.principal, reservation.model, reservation.route, reservation.request_id,
                prompt_tokens, completion_tokens, status, latency_s,
            )  # fmt: skip
            if isinstance(ticket, _Ticket):
                delta = prompt_tokens + completion_tokens - reservation.reserved_tokens
                if delta:
                    await self._release(ticket, delta)
                    if ticket.budget_scopes:
                        await asyncio.to_thread(self._adjust_budget, ticket.budget_scopes, ticket.period, delta)
        except Exception:  # noqa: BLE001 - settle runs in a finally; it must never mask the response
            log.exception("settling a reservation failed")

    def _adjust_budget(self, scopes: list[str], period: str, delta: int) -> None:
        with self.store.session() as s:
            tenancy_db.adjust_budget(s, scopes=scopes, period=period, delta=delta)

    def _record(
        self, principal: Principal, model: str, route: str, request_id: str,
        prompt_tokens: int, completion_tokens: int, status: int, latency_s: float,
    ) -> None:  # fmt: skip
        self.usage.record(
            {
                "project_id": principal.project_id,
                "key_id": principal.key_id,
                "model": model[:512],
                "route": route[:64],
                "request_id": request_id[:128],
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "status": int(status),
                "latency_ms": max(0, int(latency_s * 1000)),
                "created_at": now(),
            }
        )

    # --- reporting -----------------------------------------------------------------------------------------

    def tokens_this_month(self, project_id: str) -> int:
        with self.store.session() as s:
            return tenancy_db.tokens_since(s, project_id=project_id, since=month_start())

    async def describe(self, principal: Principal) -> dict[str, Any]:
        """Limits and this month's usage of a principal (the body of `/v1/me` besides the key fields)."""
        limits = await self.directory.limits(principal.key_id, principal.project_id)
        used = await asyncio.to_thread(self.tokens_this_month, principal.project_id)
        return {"limits": limits.effective(), "usage_this_month": {"total_tokens": used}}
