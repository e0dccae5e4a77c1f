"""Tenancy's vocabulary: who is calling (`Principal`), and the metering seam (`Meter`, `Reservation`).

The API's serving handlers get a `Principal` (from `llmaas.tenancy.auth`) and a `Meter` (`TenancyMeter`,
llmaas/tenancy/meter.py). Without auth (`--no-auth`) the principal is the local admin of the `default` project;
without tenancy wiring the meter is `NullMeter`. None of these types knows HTTP, and this module imports nothing
of llmaas: every layer above tenancy (api, training, cli) may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_PROJECT = "default"


@dataclass(frozen=True, slots=True)
class Principal:
    project_id: str
    key_id: str | None = None  # None when auth is off
    is_admin: bool = False
    allowed_models: frozenset[str] | None = None  # None = every model
    key_prefix: str | None = None  # for logs: never the secret

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


LOCAL_ADMIN = Principal(project_id=DEFAULT_PROJECT, is_admin=True)


@dataclass(slots=True)
class Reservation:
    """Tokens reserved at admission (prompt + max_tokens × n); settled to the actual count afterwards."""

    principal: Principal
    model: str
    reserved_tokens: int
    request_id: str
    route: str
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* to send back
    ticket: object | None = None  # the meter's own bookkeeping (limiter windows, budget scopes); opaque to callers


class AuthBackend(Protocol):
    """What the API asks about an `Authorization` header (`llmaas.tenancy.auth.Authenticator`, or a test's fake)."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller, or raises Unauthenticated (401)."""
        ...


class Meter(Protocol):
    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        """Reserve tokens atomically or raise RateLimited / QuotaExceeded (with Retry-After)."""
        ...

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        """Correct the reservation to the actual tokens and write one usage record (batched, off the hot path)."""
        ...


class NullMeter:
    """Admits everything, records nothing: the meter of a bare app in unit tests."""

    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        return Reservation(principal, model, tokens, request_id, route)

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        return None
