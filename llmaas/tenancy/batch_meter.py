"""`BatchMeter`: the Meter of Batch API lines — the interactive meter's budgets, the batch rate limit, exactly-once usage.

A line is admitted like an interactive request of its key and project (prompt + max_tokens × n reserved, monthly
budgets charged with the same conditional UPDATE, so a batch cannot overspend), but against the batch rate limit
(`batch_rpm` / `batch_tpm` per project) instead of the interactive rpm/tpm: a batch does not eat its project's
interactive rate, and its own rate is bounded. Settling does not queue a usage record: it hands back a `Settlement`
(the usage row, tagged with a `batch:` route, and the budget correction) that the batch runner writes in the same
transaction that records the line, so each line is billed once even across a kill -9. `refund()` undoes a
reservation whose line was not recorded (it runs again later, and is billed then).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import now
from llmaas.tenancy.meter import TenancyMeter, _Scope, _Ticket
from llmaas.tenancy.types import Principal, Reservation

ROUTE_PREFIX = "batch:"


@dataclass(slots=True)
class Settlement:
    """What one settled line reservation still has to write: its usage row and its budget correction."""

    usage: dict[str, Any]
    reserved: int
    budget_scopes: list[str] = field(default_factory=list)
    period: str = ""

    @property
    def delta(self) -> int:
        return int(self.usage["prompt_tokens"]) + int(self.usage["completion_tokens"]) - self.reserved

    def budget(self) -> tuple[list[str], str, int] | None:
        return (self.budget_scopes, self.period, self.delta) if self.budget_scopes else None


class BatchMeter:
    """Shared by a runner's lines; `line()` gives each attempt of a line its own capturing view."""

    def __init__(self, meter: TenancyMeter | None, *, rpm: int | None, tpm: int | None) -> None:
        self.meter, self.rpm, self.tpm = meter, rpm, tpm

    def line(self) -> LineMeter:
        return LineMeter(self)

    async def refund(self, settlement: Settlement) -> None:
        """Give a reservation back entirely (its line was not recorded, and will be billed when it runs again)."""
        if settlement.budget_scopes:
            await asyncio.to_thread(self._adjust, settlement.budget_scopes, settlement.period, -settlement.reserved)

    def _adjust(self, scopes: list[str], period: str, delta: int) -> None:
        if self.meter is None:  # budget scopes come only from a meter
            return
        with self.meter.store.session() as s:
            tenancy_db.adjust_budget(s, scopes=scopes, period=period, delta=delta)


class LineMeter:
    """The Meter protocol for one attempt of one line; `settlements` holds what it settled."""

    def __init__(self, owner: BatchMeter) -> None:
        self.owner = owner
        self.settlements: list[Settlement] = []

    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        tokens, meter, ticket = max(0, int(tokens)), self.owner.meter, _Ticket()
        headers: dict[str, str] = {}
        if meter is not None:
            rate = _Scope(f"batch:project:{principal.project_id}", self.owner.rpm, self.owner.tpm, None)
            headers = await meter._take_rate([rate], tokens, model, ticket)
            limits = await meter.directory.limits(principal.key_id, principal.project_id)
            scopes = [_Scope(f"project:{principal.project_id}", None, None, limits.project_budget)]
            if principal.key_id is not None:
                scopes.insert(0, _Scope(f"key:{principal.key_id}", None, None, limits.key_budget))
            await meter._charge_budgets(scopes, tokens, ticket, headers)
        return Reservation(principal, model, tokens, request_id, ROUTE_PREFIX + route, headers=headers, ticket=ticket)

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        ticket = reservation.ticket
        if not isinstance(ticket, _Ticket) or ticket.settled:
            return
        ticket.settled = True
        p = reservation.principal
        usage = {
            "project_id": p.project_id,
            "key_id": p.key_id,
            "model": reservation.model[:512],
            "route": reservation.route[:64],
            "request_id": reservation.request_id[:128],
            "prompt_tokens": max(0, int(prompt_tokens)),
            "completion_tokens": max(0, int(completion_tokens)),
            "status": int(status),
            "latency_ms": max(0, int(latency_s * 1000)),
            "created_at": now(),
        }
        settlement = Settlement(usage, reservation.reserved_tokens, list(ticket.budget_scopes), ticket.period)
        if self.owner.meter is not None and settlement.delta:
            await self.owner.meter._release(ticket, settlement.delta)  # the rate window: at once, not transactional
        self.settlements.append(settlement)
