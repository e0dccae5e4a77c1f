"""Admin routes (`/admin/projects`, `/admin/keys`): admin keys only (a regular key gets 403). Thin: see serving/admin.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from llmaas.api.deps import get_admin
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
from llmaas.api.serving.admin import AdminService
from llmaas.errors import Unavailable

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(get_admin)])


def _service(request: Request) -> AdminService:
    store = request.app.state.store
    if store is None:
        raise Unavailable("The admin API needs the database; this server runs without one.")
    auth = request.app.state.auth
    return AdminService(store, getattr(auth, "directory", None))


@router.post("/projects")
async def create_project(body: ProjectCreate, request: Request) -> ProjectObject:
    """Create a project (tenant)."""
    return await _service(request).create_project(body)


@router.get("/projects")
async def list_projects(request: Request) -> ProjectList:
    """List projects."""
    return await _service(request).list_projects()


@router.get("/projects/{project_id}")
async def get_project(project_id: str, request: Request) -> ProjectObject:
    """Show one project."""
    return await _service(request).get_project(project_id)


@router.patch("/projects/{project_id}")
async def update_project(project_id: str, body: ProjectUpdate, request: Request) -> ProjectObject:
    """Rename a project or set its limits (null removes a limit)."""
    return await _service(request).update_project(project_id, body)


@router.post("/keys")
async def create_key(body: KeyCreate, request: Request) -> ApiKeyCreated:
    """Create an API key; the response carries the secret `key`, shown this once only."""
    return await _service(request).create_key(body)


@router.get("/keys")
async def list_keys(request: Request, project_id: str | None = Query(None, max_length=64)) -> ApiKeyList:
    """List API keys (prefixes only), optionally of one project."""
    return await _service(request).list_keys(project_id)


@router.get("/keys/{key_id}")
async def get_key(key_id: str, request: Request) -> ApiKeyObject:
    """Show one API key (never its secret)."""
    return await _service(request).get_key(key_id)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, request: Request) -> ApiKeyObject:
    """Rename a key or set its limits, model scope or expiry (null removes a limit, the scope or the expiry)."""
    return await _service(request).update_key(key_id, body)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request) -> ApiKeyObject:
    """Revoke an API key (effective at once here, within the key cache TTL on other replicas)."""
    return await _service(request).revoke_key(key_id)
