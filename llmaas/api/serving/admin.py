"""Admin handlers (projects and keys), framework-free: validated protocol bodies in, OpenAI-style dicts out.

Callers (routes/admin.py) have already checked that the principal is an admin. Database work runs on a worker
thread. A change to keys or limits drops this process's key cache at once (other replicas: within its TTL).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmaas.api.protocol.admin import KeyCreate, ProjectCreate, ProjectUpdate
from llmaas.errors import InvalidRequest
from llmaas.store import crud
from llmaas.store.db import Store, now
from llmaas.store.models import Project
from llmaas.tenancy import keys
from llmaas.tenancy.keys import KeyDirectory


def project_dict(p: Project) -> dict[str, Any]:
    return {
        "object": "project",
        "id": p.id,
        "name": p.name,
        "rpm": p.rpm,
        "tpm": p.tpm,
        "monthly_token_budget": p.monthly_token_budget,
        "created_at": p.created_at,
    }


class AdminService:
    def __init__(self, store: Store, directory: KeyDirectory | None = None) -> None:
        self.store = store
        self.directory = directory

    def _changed(self) -> None:
        if self.directory is not None:
            self.directory.invalidate()

    # --- projects ------------------------------------------------------------------------------------------

    async def create_project(self, body: ProjectCreate) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return project_dict(
                    crud.create_project(
                        s, project_id=body.id, name=body.name, rpm=body.rpm, tpm=body.tpm,
                        monthly_token_budget=body.monthly_token_budget,
                    )
                )  # fmt: skip

        return await asyncio.to_thread(run)

    async def list_projects(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return {"object": "list", "data": [project_dict(p) for p in crud.list_projects(s)]}

        return await asyncio.to_thread(run)

    async def get_project(self, project_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return project_dict(crud.get_project(s, project_id=project_id))

        return await asyncio.to_thread(run)

    async def update_project(self, project_id: str, body: ProjectUpdate) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return project_dict(crud.update_project(s, project_id=project_id, **body.changes()))

        out = await asyncio.to_thread(run)
        self._changed()
        return out

    # --- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, body: KeyCreate) -> dict[str, Any]:
        if body.expires_at is not None and body.expires_at <= now():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")

        def run() -> dict[str, Any]:
            row, secret = keys.create_key(
                self.store, project_id=body.project_id, name=body.name, is_admin=body.is_admin, models=body.models,
                expires_at=body.expires_at, rpm=body.rpm, tpm=body.tpm, monthly_token_budget=body.monthly_token_budget,
            )  # fmt: skip
            return {**row.to_dict(), "key": secret}  # the only time the secret is ever shown

        return await asyncio.to_thread(run)

    async def list_keys(self, project_id: str | None = None) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                if project_id is not None:
                    crud.get_project(s, project_id=project_id)
                return {"object": "list", "data": [k.to_dict() for k in crud.list_keys(s, project_id=project_id)]}

        return await asyncio.to_thread(run)

    async def get_key(self, key_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return crud.get_key(s, key_id=key_id).to_dict()

        return await asyncio.to_thread(run)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.store.session() as s:
                return crud.revoke_key(s, key_id=key_id).to_dict()

        out = await asyncio.to_thread(run)
        self._changed()
        return out
