"""`GET /v1/usage` (own project; admins any `project_id`) and `GET /v1/me` (who am I, my limits, this month)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from llmaas.api.deps import PrincipalDep, StoreDep
from llmaas.api.protocol.usage import Me, UsageList, UsageQuery
from llmaas.api.serving import usage as serving

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage")
async def get_usage(
    store: StoreDep,
    principal: PrincipalDep,
    start: Annotated[int | None, Query(ge=0, le=2**40)] = None,
    end: Annotated[int | None, Query(ge=0, le=2**40)] = None,
    group_by: Literal["model", "key", "day"] = "model",
    project_id: Annotated[str | None, Query(max_length=64)] = None,
) -> UsageList:
    """Requests and tokens in a time range, grouped by model, key or day."""
    query = UsageQuery(start=start, end=end, group_by=group_by, project_id=project_id)
    return await serving.usage(store, principal, query)


@router.get("/me")
async def get_me(request: Request, principal: PrincipalDep) -> Me:
    """The calling key: its project, scopes, limits and this month's usage."""
    state = request.app.state
    # Limits come through tenancy's key cache: auth's, or the meter's when auth is off; a bare app has neither.
    directory = getattr(state.auth, "directory", None) or getattr(getattr(state, "meter", None), "directory", None)
    return await serving.me(state.store, directory, principal)
