"""Admin handlers (projects and keys), framework-free: validated protocol bodies in, protocol objects out.

Callers (routes/admin.py) have already checked that the principal is an admin. Database work runs on a worker
thread. A change to keys or limits drops this process's key cache at once (other replicas: within its TTL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from llmaas.api.protocol.admin import (
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyObject,
    KeyCreate,
    KeyUpdate,
    ProjectCreate,
    ProjectList,
    ProjectObject,
    ProjectUpdate,
)
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

    async def create_project(self, body: ProjectCreate) -> ProjectObject:
        return await self._db(
            lambda s: ProjectObject.of(tenancy_db.create_project(
                s, project_id=body.id, name=body.name, rpm=body.rpm, tpm=body.tpm,
                monthly_token_budget=body.monthly_token_budget,
            ))
        )  # fmt: skip

    async def list_projects(self) -> ProjectList:
        return await self._db(lambda s: ProjectList(data=[ProjectObject.of(p) for p in tenancy_db.list_projects(s)]))

    async def get_project(self, project_id: str) -> ProjectObject:
        return await self._db(lambda s: ProjectObject.of(tenancy_db.get_project(s, project_id=project_id)))

    async def update_project(self, project_id: str, body: ProjectUpdate) -> ProjectObject:
        out = await self._db(
            lambda s: ProjectObject.of(tenancy_db.update_project(s, project_id=project_id, **body.changes()))
        )
        self._changed()
        return out

    # --- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, body: KeyCreate) -> ApiKeyCreated:
        if body.expires_at is not None and body.expires_at <= now():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")

        def run() -> ApiKeyCreated:
            row, secret = keys.create_key(self.store, **body.model_dump())  # KeyCreate's fields are create_key's
            return ApiKeyCreated(**ApiKeyObject.of(row).model_dump(), key=secret)  # the only time it is ever shown

        return await asyncio.to_thread(run)

    async def list_keys(self, project_id: str | None = None) -> ApiKeyList:
        def work(s: Session) -> ApiKeyList:
            if project_id is not None:
                tenancy_db.get_project(s, project_id=project_id)  # an unknown project is a 404, not an empty list
            return ApiKeyList(data=[ApiKeyObject.of(k) for k in tenancy_db.list_keys(s, project_id=project_id)])

        return await self._db(work)

    async def get_key(self, key_id: str) -> ApiKeyObject:
        return await self._db(lambda s: ApiKeyObject.of(tenancy_db.get_key(s, key_id=key_id)))

    async def update_key(self, key_id: str, body: KeyUpdate) -> ApiKeyObject:
        if body.expires_at is not None and body.expires_at <= now():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
        out = await self._db(lambda s: ApiKeyObject.of(tenancy_db.update_key(s, key_id=key_id, **body.changes())))
        self._changed()
        return out

    async def revoke_key(self, key_id: str) -> ApiKeyObject:
        out = await self._db(lambda s: ApiKeyObject.of(tenancy_db.revoke_key(s, key_id=key_id)))
        self._changed()
        return out
