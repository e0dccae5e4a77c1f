"""`/v1/responses`: create (JSON or server-sent events), retrieve, delete, input items; a thin router over
serving/responses.py. Stored responses are the caller's project's only: any other id is 404."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from llmaas.api.deps import CallDep, PrincipalDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.responses import InputItemList, ResponseCreateRequest, ResponseDeleted, ResponseObject
from llmaas.api.serving.responses import ResponseStore, prepare_response
from llmaas.api.sse import event_sse_response, until_disconnected

router = APIRouter(tags=["responses"], responses=ERROR_RESPONSES)


def get_responses(request: Request) -> ResponseStore:
    return request.app.state.responses


ResponsesDep = Annotated[ResponseStore, Depends(get_responses)]


@router.post("/v1/responses", response_model=ResponseObject)
async def create_response(
    body: ResponseCreateRequest, call: CallDep, responses: ResponsesDep, request: Request
) -> Response:
    """Create a model response (OpenAI's Responses API; `stream: true` answers with named server-sent events)."""
    run = await until_disconnected(request, prepare_response(body, call, responses))
    if body.stream:
        return event_sse_response(run.events(), run.headers, on_close=run.close)
    result = await until_disconnected(request, run.complete())
    return JSONResponse(result, headers=run.headers)


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def retrieve_response(response_id: str, principal: PrincipalDep, responses: ResponsesDep) -> JSONResponse:
    """Retrieve a stored response."""
    return JSONResponse(await responses.get(principal, response_id))


@router.delete("/v1/responses/{response_id}", response_model=ResponseDeleted)
async def delete_response(response_id: str, principal: PrincipalDep, responses: ResponsesDep) -> JSONResponse:
    """Delete a stored response (and its items); a conversation continued from it no longer reaches it."""
    return JSONResponse(await responses.delete(principal, response_id))


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(
    response_id: str,
    principal: PrincipalDep,
    responses: ResponsesDep,
    after: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> InputItemList:
    """List a stored response's input items (paginated: `after`, `limit`, `order`)."""
    return await responses.input_items(principal, response_id, after=after, limit=limit, order=order)
