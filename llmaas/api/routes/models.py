"""GET /v1/models and /v1/models/{model}: a thin router over serving/models.py."""

from __future__ import annotations

from fastapi import APIRouter

from llmaas.api.deps import CallDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.models import ModelCard, ModelList
from llmaas.api.serving.models import list_models, retrieve_model

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def get_models(call: CallDep) -> ModelList:
    """List the models this key may use (base models and the project's fine-tuned models)."""
    return await list_models(call)


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(model: str, call: CallDep) -> ModelCard:
    """Retrieve one model (404 model_not_found if it does not exist or the key may not use it)."""
    return await retrieve_model(model, call)
