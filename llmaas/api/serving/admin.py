"""Admin handlers (projects and keys), framework-free: validated protocol bodies in, OpenAI-style dicts out.

Callers (routes/admin.py) have already checked that the principal is an admin. Database work runs on a worker
thread. A change to keys or limits drops this process's key cache at once (other replicas: within its TTL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from llmaas.api.protocol.admin import KeyCreate, KeyUpdate, ProjectCreate, ProjectUpdate
from llmaas.errors import InvalidRequest
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store, now
from llmaas.tenancy import keys
from llmaas.tenancy.keys import KeyDirectory

T = TypeVar("T")


class AdminService:
    def __init__(self, store: Store, directory: KeyDirectory | None = None) -> None:
        self.store = store
        self.directory = directory

    async def _db(self, work: Callable[[Session], T]) -> T:
        """`work` in one session (committed when it returns) on a worker thread: the event loop never waits on SQL."""

        def run() -> T:
            with self.store.session() as s:
                return work(s)

        return await asyncio.to_thread(run)

    def _changed(self) -> None:
        if self.directory is not None:
            self.directory.invalidate()

    # --- projects ------------------------------------------------------------------------------------------

    async def create_project(self, body: ProjectCreate) -> dict[str, Any]:
        return await self._db(
            lambda s: tenancy_db.create_project(
                s, project_id=body.id, name=body.name, rpm=body.rpm, tpm=body.tpm,
                monthly_token_budget=body.monthly_token_budget,
            ).to_dict()
        )  # fmt: skip

    async def list_projects(self) -> dict[str, Any]:
        return await self._db(lambda s: {"object": "list", "data": [p.to_dict() for p in tenancy_db.list_projects(s)]})

    async def get_project(self, project_id: str) -> dict[str, Any]:
        return await self._db(lambda s: tenancy_db.get_project(s, project_id=project_id).to_dict())

    async def update_project(self, project_id: str, body: ProjectUpdate) -> dict[str, Any]:
        out = await self._db(lambda s: tenancy_db.update_project(s, project_id=project_id, **body.changes()).to_dict())
        self._changed()
        return out

    # --- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, body: KeyCreate) -> dict[str, Any]:
        if body.expires_at is not None and body.expires_at <= now():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")

        def run() -> dict[str, Any]:
            row, secret = keys.create_key(self.store, **body.model_dump())  # KeyCreate's fields are create_key's
            return {**row.to_dict(), "key": secret}  # the only time the secret is ever shown

        return await asyncio.to_thread(run)

    async def list_keys(self, project_id: str | None = None) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            if project_id is not None:
                tenancy_db.get_project(s, project_id=project_id)  # an unknown project is a 404, not an empty list
            return {"object": "list", "data": [k.to_dict() for k in tenancy_db.list_keys(s, project_id=project_id)]}

        return await self._db(work)

    async def get_key(self, key_id: str) -> dict[str, Any]:
        return await self._db(lambda s: tenancy_db.get_key(s, key_id=key_id).to_dict())

    async def update_key(self, key_id: str, body: KeyUpdate) -> dict[str, Any]:
        if body.expires_at is not None and body.expires_at <= now():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
        out = await self._db(lambda s: tenancy_db.update_key(s, key_id=key_id, **body.changes()).to_dict())
        self._changed()
        return out

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        out = await self._db(lambda s: tenancy_db.revoke_key(s, key_id=key_id).to_dict())
        self._changed()
        return out
