"""/v1/responses without the framework: input items (+ the stored conversation) → one chat generation → a response
object or its stream of events; stored responses read, paged and deleted per project.

`prepare_response()` validates, rebuilds the conversation behind `previous_response_id` from the database (so it
works after a restart and on every replica), translates it to a chat completion (responses_chat.py) and starts it
with chat's own `prepare_chat` — meter, limits, prefix cache and errors included; usage rows carry the route
/v1/responses and the response id. The returned `ResponseRun` then either aggregates (`complete()`) or streams the
documented events (`events()`): response.created, response.in_progress, output_item.added, content_part.added,
output_text.delta…, output_text.done, content_part.done, output_item.done, then response.completed (or
response.incomplete when max_output_tokens cut it, response.failed on an error), each with a rising sequence_number.
A stored response is saved before its final event, so a client may continue it the moment it has it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from llmaas.api.deps import Call
from llmaas.api.errors import error_payload
from llmaas.api.protocol.responses import InputItemList, ResponseCreateRequest, ResponseObject, ResponseUsage
from llmaas.api.serving.chat import ChatRun, prepare_chat
from llmaas.api.serving.responses_chat import (
    chat_messages,
    chat_request,
    function_call_item,
    message_item,
    output_items,
)
from llmaas.errors import InvalidRequest, Unavailable
from llmaas.ids import item_id
from llmaas.store import responses as responses_db
from llmaas.tenancy.types import Principal

ROUTE = "/v1/responses"
PURGE_EVERY_S = 600.0


class ResponseStore:
    """The stored responses of every project, in the SQL store (calls run on worker threads)."""

    def __init__(self, store: Any, retention_days: int) -> None:
        self.store, self.retention_days = store, retention_days
        self._last_purge = 0.0

    def _db(self) -> Any:
        if self.store is None:
            raise Unavailable("Stored responses need the database; this server runs without one (use store: false).")
        return self.store

    async def _run(self, fn: Any) -> Any:
        db = self._db()

        def work() -> Any:
            with db.session() as s:
                return fn(s)

        return await asyncio.to_thread(work)

    async def conversation(self, principal: Principal, response_id: str) -> list[dict[str, Any]]:
        return await self._run(lambda s: responses_db.conversation(s, response_id, project_id=principal.project_id))

    async def save(self, principal: Principal, body: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
        expires = int(time.time()) + self.retention_days * 86400 if self.retention_days else None
        await self._run(
            lambda s: responses_db.save_response(
                s,
                project_id=principal.project_id,
                body=body,
                input_items=inputs,
                output_items=body["output"],
                expires_at=expires,
            )
        )
        if time.monotonic() - self._last_purge > PURGE_EVERY_S:  # retention, lazily: at most once per interval
            self._last_purge = time.monotonic()
            await self._run(lambda s: responses_db.purge_expired(s))

    async def get(self, principal: Principal, response_id: str) -> dict[str, Any]:
        return await self._run(
            lambda s: dict(responses_db.get_response(s, response_id, project_id=principal.project_id).body)
        )

    async def delete(self, principal: Principal, response_id: str) -> dict[str, Any]:
        await self._run(lambda s: responses_db.delete_response(s, response_id, project_id=principal.project_id))
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self, principal: Principal, response_id: str, *, after: str | None, limit: int, order: str
    ) -> InputItemList:
        data, more = await self._run(
            lambda s: responses_db.list_input_items(
                s, response_id, project_id=principal.project_id, after=after, limit=limit, order=order
            )
        )
        return InputItemList(
            data=data, has_more=more, first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None
        )


async def prepare_response(req: ResponseCreateRequest, call: Call, responses: ResponseStore) -> ResponseRun:
    """Validate, rebuild the conversation, translate to chat and start it; returns once the first token (or a 4xx)."""
    req.check_limits(call.settings.limits)
    inputs = req.input_items()
    if req.store:
        responses._db()  # 503 now rather than after the generation
    history = await responses.conversation(call.principal, req.previous_response_id) if req.previous_response_id else []
    if len(history) + len(inputs) > call.settings.limits.max_messages:
        raise InvalidRequest(
            f"The conversation has more than {call.settings.limits.max_messages} items.", param="input"
        )
    chat = chat_request(req, chat_messages(req.instructions, history + inputs), stream=req.stream)
    response_id = item_id("resp")
    run = await prepare_chat(chat, call, route=ROUTE, request_id=response_id)
    return ResponseRun(run, req, responses, call.principal, inputs, response_id)


@dataclass
class ResponseRun:
    chat: ChatRun
    req: ResponseCreateRequest
    responses: ResponseStore
    principal: Principal
    inputs: list[dict[str, Any]]
    response_id: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    _seq: int = field(default=0, init=False)

    @property
    def headers(self) -> dict[str, str]:
        return self.chat.headers

    async def close(self) -> None:
        await self.chat.close()

    def envelope(self, status: str, output: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        """The response object in `status` (the request's settings echoed as OpenAI echoes them)."""
        req = self.req
        tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
        text = (
            {"format": req.text.format.model_dump(by_alias=True, exclude_none=True)}
            if req.text and req.text.format
            else {"format": {"type": "text"}}
        )
        obj = ResponseObject(
            id=self.response_id, created_at=self.created_at, status=status,
            instructions=req.instructions, max_output_tokens=req.max_output_tokens, metadata=req.metadata or {},
            model=req.model, output=output or [], previous_response_id=req.previous_response_id, store=req.store,
            temperature=1.0 if req.temperature is None else req.temperature, top_p=1.0 if req.top_p is None else req.top_p,
            parallel_tool_calls=True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            tool_choice=req.tool_choice or "auto", tools=tools, text=text, user=req.user, **extra,
        )  # fmt: skip
        return obj.model_dump(mode="json")

    def _final(self, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        cut = any(item.get("status") == "incomplete" for item in output)
        usage_obj = None
        if usage is not None:
            usage_obj = ResponseUsage(
                input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"], total_tokens=usage["total_tokens"],
                input_tokens_details={"cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)},
            )  # fmt: skip
        return self.envelope(
            "incomplete" if cut else "completed", output, usage=usage_obj, completed_at=int(time.time()),
            incomplete_details={"reason": "max_output_tokens"} if cut else None,
        )  # fmt: skip

    async def _store(self, body: dict[str, Any]) -> None:
        if self.req.store:
            await self.responses.save(self.principal, body, self.inputs)

    async def complete(self) -> dict[str, Any]:
        result = (await self.chat.complete()).model_dump(mode="json")
        body = self._final(output_items(result["choices"][0]), result["usage"])
        await self._store(body)
        return body

    # --- streaming -------------------------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The documented event sequence; an error after the start becomes `response.failed` (never a broken stream)."""
        yield self._event("response.created", response=self.envelope("in_progress"))
        yield self._event("response.in_progress", response=self.envelope("in_progress"))
        stream = _StreamState(self)
        chunks = self.chat.chunks()
        try:
            async for chunk in chunks:
                for event in stream.feed(chunk.model_dump(mode="json")):
                    yield event
            for event in stream.finish():
                yield event
            body = self._final(stream.output, stream.usage)
            await self._store(body)
            yield self._event(f"response.{body['status']}", response=body)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the stream has started: the failure is an event, not a status
            _, payload, _ = error_payload(exc)
            error = {
                "code": payload["error"]["code"] or payload["error"]["type"],
                "message": payload["error"]["message"],
            }
            yield self._event("response.failed", response=self.envelope("failed", stream.output, error=error))
        finally:
            await chunks.aclose()


class _StreamState:
    """Chat chunks → Responses events: one message item for the text, one function_call item per tool call."""

    def __init__(self, run: ResponseRun) -> None:
        self.run = run
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.text: list[str] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool_call index -> open function_call item
        self.status = "completed"

    def _open_message(self) -> list[dict[str, Any]]:
        self.message = message_item("", "in_progress")
        self.message["content"] = []
        self.output.append(self.message)
        index = len(self.output) - 1
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self.run._event("response.output_item.added", output_index=index, item=dict(self.message, content=[])),
            self.run._event(
                "response.content_part.added",
                item_id=self.message["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.message is None:
                    events += self._open_message()
                message = self.message or {}
                self.text.append(delta["content"])
                events.append(self.run._event(
                    "response.output_text.delta", item_id=message["id"], output_index=self.output.index(message),
                    content_index=0, delta=delta["content"], logprobs=[],
                ))  # fmt: skip
            for call in delta.get("tool_calls") or []:  # chat's tool-call deltas, in OpenAI's shape
                events += self._call_delta(call)
            if choice.get("finish_reason") == "length":
                self.status = "incomplete"
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        fn = call.get("function") or {}
        item = self.calls.get(call.get("index", 0))
        if item is None:
            item = function_call_item(call.get("id") or "", fn.get("name") or "", "", "in_progress")
            self.calls[call.get("index", 0)] = item
            self.output.append(item)
            events.append(
                self.run._event("response.output_item.added", output_index=len(self.output) - 1, item=dict(item))
            )
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            events.append(self.run._event(
                "response.function_call_arguments.delta", item_id=item["id"], output_index=self.output.index(item), delta=fn["arguments"],
            ))  # fmt: skip
        return events

    def finish(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.message is None and not self.calls:
            events += self._open_message()
        if self.message is not None:
            index, text = self.output.index(self.message), "".join(self.text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            self.message.update(status=self.status, content=[part])
            events += [
                self.run._event("response.output_text.done", item_id=self.message["id"], output_index=index, content_index=0, text=text, logprobs=[]),
                self.run._event("response.content_part.done", item_id=self.message["id"], output_index=index, content_index=0, part=part),
                self.run._event("response.output_item.done", output_index=index, item=dict(self.message)),
            ]  # fmt: skip
        for item in self.calls.values():
            index = self.output.index(item)
            item["status"] = self.status
            events += [
                self.run._event("response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=item["arguments"]),
                self.run._event("response.output_item.done", output_index=index, item=dict(item)),
            ]  # fmt: skip
        return events
