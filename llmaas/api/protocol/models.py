"""/v1/models schemas: OpenAI's model object, plus two extension fields (`kind`, `max_model_len`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmaas.api.protocol.common import ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["chat", "embedding"] = Field("chat", description="Extension: which endpoint serves this model.")
    max_model_len: int | None = Field(None, description="Extension: context length in tokens.")
    parent: str | None = Field(None, description="Extension: the base model of a fine-tuned model.")


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
