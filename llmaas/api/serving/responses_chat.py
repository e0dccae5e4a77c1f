"""The Responses API in chat's terms, both ways: items → chat messages and a `ChatCompletionRequest`, chat's answer
→ Responses output items. /v1/responses has no generation path of its own; serving/responses.py runs what this
module builds through `prepare_chat` (the same template, meter, limits and errors as /v1/chat/completions).

`text.format` becomes chat's `response_format`, function `tools`/`tool_choice` chat's own, `function_call` items
assistant `tool_calls` and `function_call_output` items `tool` messages: the engine enforces them exactly as on
/v1/chat/completions (constrained decoding), and chat's tool calls come back as `function_call` output items.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from llmaas.api.protocol.chat import ChatCompletionRequest
from llmaas.api.protocol.responses import ResponseCreateRequest
from llmaas.engine.tokenizer import flatten_content
from llmaas.errors import InvalidRequest
from llmaas.ids import item_id

# --- Responses → chat --------------------------------------------------------------------------------


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for `instructions` (a system message) then the conversation's items, oldest first.

    Consecutive `function_call` items become one assistant message's `tool_calls` (joined to the assistant text just
    before them, as chat completions write a turn); a `function_call_output` becomes a `tool` message.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": flatten_content(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                last["content"] = last.get("content") or None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def chat_request(req: ResponseCreateRequest, messages: list[dict[str, Any]], *, stream: bool) -> ChatCompletionRequest:
    """The chat completion that answers `req` (sampling, limits, format and tools in chat's own field names)."""
    fields: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.user,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict, "description": fmt.description}
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {k: v for k, v in schema.items() if v is not None},
        }
    if req.tools:
        fields["tools"] = [
            {"type": "function", "function": {k: v for k, v in {
                "name": t.name, "description": t.description, "parameters": t.parameters, "strict": t.strict,
            }.items() if v is not None}}
            for t in req.tools
        ]  # fmt: skip
        if req.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = req.parallel_tool_calls
        if isinstance(req.tool_choice, dict):
            fields["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice["name"]}}
        elif req.tool_choice is not None:
            fields["tool_choice"] = req.tool_choice
    if not messages:
        raise InvalidRequest("The conversation is empty: give at least one input item.", param="input")
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # e.g. a bound chat has and we do not: still the client's 400, never a 500
        first = exc.errors()[0]
        raise InvalidRequest(f"Invalid input: {first.get('msg', 'invalid value')}.", param="input") from None


# --- chat → Responses --------------------------------------------------------------------------------


def message_item(text: str, status: str, msg_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message", "id": msg_id or item_id("msg"), "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }  # fmt: skip


def function_call_item(
    call_id: str, name: str, arguments: str, status: str = "completed", fc_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": fc_id or item_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice (`ChatCompletion.model_dump()["choices"][0]`) as Responses output: the assistant's text as a
    `message` item, each of its `tool_calls` as a `function_call` item. A reply of tool calls only has no message."""
    message = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    calls = message.get("tool_calls") or []
    items = [message_item(message.get("content") or "", status)] if message.get("content") or not calls else []
    for call in calls:
        fn = call.get("function") or {}
        items.append(
            function_call_item(
                call.get("id") or item_id("call"), fn.get("name") or "", fn.get("arguments") or "", status
            )
        )
    return items
