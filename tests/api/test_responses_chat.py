"""The Responses ↔ chat translation on constructed values: items to chat turns, formats and tools to chat fields, and back."""

from __future__ import annotations

from typing import Any

from llmaas.api.protocol.chat import ChatChoice, ChatCompletion
from llmaas.api.protocol.common import Usage
from llmaas.api.protocol.responses import ResponseCreateRequest
from llmaas.api.serving.responses_chat import chat_messages, chat_request, output_items


def test_chat_tool_calls_become_function_call_items() -> None:
    choice = {
        "index": 0,
        "finish_reason": "tool_calls",
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
    }
    items = output_items(choice)
    assert [(i["type"], i["call_id"], i["name"], i["arguments"], i["status"]) for i in items] == [
        ("function_call", "call_1", "get_weather", '{"city": "Paris"}', "completed"),
        ("function_call", "call_2", "get_time", "{}", "completed"),
    ]
    assert all(i["id"].startswith("fc_") for i in items)
    # text beside tool calls: the message first, then the calls
    choice["message"]["content"] = "Let me check."
    assert [i["type"] for i in output_items(choice)] == ["message", "function_call", "function_call"]


def test_a_real_chat_completion_becomes_one_message() -> None:
    completion = ChatCompletion(
        id="x", created=0, model="tiny", usage=Usage(prompt_tokens=1, total_tokens=1),
        choices=[ChatChoice.model_validate({"index": 0, "message": {"content": "hi"}, "finish_reason": "length"})],
    )  # fmt: skip
    [item] = output_items(completion.model_dump(mode="json")["choices"][0])
    assert item["type"] == "message" and item["status"] == "incomplete" and item["content"][0]["text"] == "hi"


def test_function_call_items_become_chat_tool_turns() -> None:
    req = ResponseCreateRequest.model_validate({"model": "m", "input": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]},
    ]})  # fmt: skip
    messages = chat_messages("sys", req.input_items())
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]  # fmt: skip


def test_format_and_tools_reach_chat_in_its_own_field_names() -> None:
    body: dict[str, Any] = {
        "model": "m", "input": "hi", "max_output_tokens": 7, "temperature": 0.5, "top_p": 0.9, "user": "u",
        "text": {"format": {"type": "json_schema", "name": "person", "schema": {"type": "object"}, "strict": True}},
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False,
    }  # fmt: skip
    req = ResponseCreateRequest.model_validate(body)
    chat = chat_request(req, chat_messages(None, req.input_items()), stream=True)
    dumped = chat.model_dump(exclude_none=True, by_alias=True)
    assert dumped["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": {"type": "object"}, "strict": True},
    }
    assert dumped["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    assert dumped["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert dumped["parallel_tool_calls"] is False
    assert (chat.max_completion_tokens, chat.temperature, chat.top_p, chat.user, chat.include_usage) == (
        7,
        0.5,
        0.9,
        "u",
        True,
    )
