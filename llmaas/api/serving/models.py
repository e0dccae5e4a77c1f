"""GET /v1/models and /v1/models/{id} without the framework: base models the caller may use + its fine-tuned models."""

from __future__ import annotations

from typing import Any

from llmaas.api.deps import Call
from llmaas.api.protocol.models import ModelCard, ModelList
from llmaas.api.serving.generation import not_found


def _base_cards(call: Call) -> list[ModelCard]:
    return [
        ModelCard(
            id=info.id,
            created=int(info.created),
            owned_by=info.owned_by,
            kind=info.kind,
            max_model_len=info.max_model_len,
        )
        for info in call.models.list()
        if call.principal.may_use(info.id)
    ]


def _ft_card(ft: Any) -> ModelCard:
    return ModelCard(id=ft.id, created=int(ft.created), owned_by=ft.owned_by, kind="chat", parent=ft.base_model)


async def list_models(call: Call) -> ModelList:
    cards = _base_cards(call)
    if call.finetuned is not None:
        cards += [_ft_card(ft) for ft in await call.finetuned.list(call.principal) if call.principal.may_use(ft.id)]
    return ModelList(data=cards)


async def retrieve_model(model_id: str, call: Call) -> ModelCard:
    for card in _base_cards(call):
        if card.id == model_id:
            return card
    if call.finetuned is not None and call.principal.may_use(model_id):
        ft = await call.finetuned.lookup(model_id, call.principal)
        if ft is not None:
            return _ft_card(ft)
    raise not_found(model_id)
