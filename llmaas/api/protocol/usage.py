"""Query and response shapes of `GET /v1/usage` and `GET /v1/me`; no I/O."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: int | None = Field(None, ge=0, le=2**40, description="Unix seconds, inclusive.")
    end: int | None = Field(None, ge=0, le=2**40, description="Unix seconds, exclusive.")
    group_by: Literal["model", "key", "day"] = "model"
    project_id: str | None = Field(None, max_length=64, description="Admins only: another project's usage.")


class UsageGroup(BaseModel):
    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageGroup]


class MeLimits(BaseModel):
    rpm: int | None
    tpm: int | None
    monthly_token_budget: int | None


class MeUsage(BaseModel):
    total_tokens: int


class Me(BaseModel):
    project_id: str
    key_id: str | None
    key_name: str | None
    key_prefix: str | None
    is_admin: bool
    models: list[str] | None
    limits: MeLimits
    usage_this_month: MeUsage
