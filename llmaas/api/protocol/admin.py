"""Request bodies (bounded, `extra="forbid"`) and responses of the admin API (`/admin/projects`, `/admin/keys`); no I/O.

Only admin keys reach these schemas; privilege fields (project, admin flag, scopes, limits) exist nowhere else. The
response objects read a store row's attributes (`ProjectObject.of(row)`), and are also what `llmaas projects` and
`llmaas keys` print: one shape for the API and the CLI. A key's hash is never part of any of them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmaas.api.protocol.common import ResponseModel, RowObject

ProjectId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="lowercase id")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Rpm = Annotated[int, Field(ge=1, le=10_000_000, description="Requests per minute.")]
Tpm = Annotated[int, Field(ge=1, le=1_000_000_000_000, description="Tokens per minute (prompt + max_tokens × n).")]
Budget = Annotated[int, Field(ge=0, le=10**15, description="Tokens per calendar month (UTC).")]
ModelName = Annotated[str, Field(min_length=1, max_length=512)]


class _Strict(BaseModel):
    """Unknown fields are refused; JSON types are strict (no bool or string as a number, no fraction as an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ProjectCreate(_Strict):
    id: ProjectId | None = None
    name: Name
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    monthly_token_budget: Budget | None = None


class _Patch(_Strict):
    """PATCH: fields present are set; a limit (or scope, or expiry) sent as null is removed; a null name is ignored."""

    name: Name | None = None
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    monthly_token_budget: Budget | None = None

    def changes(self) -> dict[str, object]:
        out = {name: getattr(self, name) for name in self.model_fields_set}
        if out.get("name", "") is None:
            out.pop("name")
        return out


class ProjectUpdate(_Patch):
    pass


class KeyUpdate(_Patch):
    """A key's name, limits, model scope and expiry; never its project, admin flag or secret (issue a new key)."""

    models: list[ModelName] | None = Field(None, max_length=256, description="Models this key may use; null = all.")
    expires_at: int | None = Field(None, ge=0, le=2**40, description="Unix seconds; null = never.")


class KeyCreate(_Strict):
    project_id: ProjectId
    name: Name
    is_admin: bool = False
    models: list[ModelName] | None = Field(None, max_length=256, description="Models this key may use; null = all.")
    expires_at: int | None = Field(None, ge=0, le=2**40, description="Unix seconds; null = never.")
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    monthly_token_budget: Budget | None = None


# --- responses -------------------------------------------------------------------------------------------


class ProjectObject(RowObject):
    object: Literal["project"] = "project"
    id: str
    name: str
    rpm: int | None
    tpm: int | None
    monthly_token_budget: int | None
    created_at: int


class ProjectList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ProjectObject]


class ApiKeyObject(RowObject):
    """The listing shape: never the hash, never the secret."""

    object: Literal["api_key"] = "api_key"
    id: str
    project_id: str
    name: str
    prefix: str = Field(description="The start of the secret, to recognise a key by.")
    is_admin: bool
    models: list[str] | None
    expires_at: int | None
    revoked_at: int | None
    created_at: int
    rpm: int | None
    tpm: int | None
    monthly_token_budget: int | None


class ApiKeyCreated(ApiKeyObject):
    key: str = Field(description="The secret, shown this once only.")


class ApiKeyList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyObject]
