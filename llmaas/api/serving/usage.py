"""`/v1/usage` and `/v1/me` handlers, framework-free. A principal sees its own project; admins may name another."""

from __future__ import annotations

import asyncio
from typing import Any

from llmaas.api.protocol.usage import Me, UsageList, UsageQuery
from llmaas.errors import NotFound, Unavailable
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store
from llmaas.tenancy.keys import NO_LIMITS, KeyDirectory
from llmaas.tenancy.meter import month_start
from llmaas.tenancy.types import Principal


async def usage(store: Store | None, principal: Principal, query: UsageQuery) -> UsageList:
    if store is None:
        raise Unavailable("Usage metering is not enabled on this server.")
    project_id = query.project_id or principal.project_id
    if project_id != principal.project_id and not principal.is_admin:
        # Another tenant's usage is invisible, like everything it owns: 404 whether or not the project exists.
        raise NotFound(f"No project found with id '{project_id}'.", param="project_id")

    def run() -> list[dict[str, Any]]:
        with store.session() as s:
            if query.project_id is not None:
                tenancy_db.get_project(s, project_id=project_id)  # unknown (or malformed) project → 404
            return tenancy_db.usage_summary(
                s, project_id=project_id, start=query.start, end=query.end, group_by=query.group_by
            )

    return UsageList.model_validate({"object": "list", "data": await asyncio.to_thread(run)})


async def me(store: Store | None, directory: KeyDirectory | None, principal: Principal) -> Me:
    def run() -> tuple[str | None, int]:
        if store is None:
            return None, 0
        with store.session() as s:
            name = tenancy_db.get_key(s, key_id=principal.key_id).name if principal.key_id else None
            return name, tenancy_db.tokens_since(s, project_id=principal.project_id, since=month_start())

    key_name, used = await asyncio.to_thread(run)
    limits = await directory.limits(principal.key_id, principal.project_id) if directory else NO_LIMITS
    return Me(
        project_id=principal.project_id,
        key_id=principal.key_id,
        key_name=key_name,
        key_prefix=principal.key_prefix,
        is_admin=principal.is_admin,
        models=sorted(principal.allowed_models) if principal.allowed_models is not None else None,
        limits=limits.effective(),
        usage_this_month={"total_tokens": used},
    )
