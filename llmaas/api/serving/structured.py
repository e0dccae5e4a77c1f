"""Structured outputs and tool calling, shared by every generating endpoint (chat completions; the Responses API
reuses it): what to constrain, how tools appear in the prompt, and how the model's tool-call syntax is parsed back.

- `build_constraint(...)` turns a JSON schema / json_object request and the tools + tool_choice into a `Constraint`:
  the engine's `GrammarSpec` (or none), the tools to parse, and the tool prompt. Pure: no I/O, no torch.
- `compile_constraint(...)` compiles it for a model's tokenizer in a worker thread (cached by the engine per tenant
  and spec, bounded in time); a schema it cannot compile is a 400 naming the field.
- `ToolCallParser` reads the output as it streams and splits it into content text and tool calls.

The tool-call syntax (SmolLM2's and most small models' templates have none; ours follows Hermes/Qwen):
`<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>`, one per call, newline-separated.
With tool_choice `required` or a named function the output is exactly such calls; with `auto` it is free text in which
every call is constrained once `<tool_call>` starts (xgrammar's triggered tags).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from llmaas.engine.types import GrammarError, GrammarSpec
from llmaas.errors import InvalidRequest
from llmaas.ids import call_id

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_WHITESPACE = 1  # between JSON tokens: a random model cannot stall a call on endless blanks

ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the model may call (whatever the API's own shape of it)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class Constraint:
    """What one request asks of the output: a grammar to enforce (or None) and the tools to parse back."""

    spec: GrammarSpec | None
    param: str  # the field blamed when the spec does not compile
    tools: list[ToolSpec] = field(default_factory=list)
    tool_mode: ToolMode = "none"
    parallel_tool_calls: bool = True

    @property
    def parses_tools(self) -> bool:
        return self.tool_mode != "none" and bool(self.tools)


def build_constraint(
    *,
    json_schema: dict[str, Any] | None = None,
    json_object: bool = False,
    tools: list[ToolSpec] | None = None,
    tool_choice: str | None = None,
    parallel_tool_calls: bool = True,
    schema_param: str = "response_format",
    tools_param: str = "tools",
) -> Constraint:
    """The constraint of a request. `tool_choice` is none/auto/required or a function name (already validated)."""
    tools = list(tools or [])
    if tool_choice is None:
        tool_choice = "auto" if tools else "none"
    text_schema: dict[str, Any] | None = (
        json_schema if json_schema is not None else ({"type": "object"} if json_object else None)
    )
    if tool_choice == "none" or not tools:
        if text_schema is None:
            return Constraint(None, schema_param)
        return Constraint(GrammarSpec("json_schema", json.dumps(text_schema)), schema_param)

    mode: ToolMode = "auto" if tool_choice == "auto" else "required"
    callable_tools = tools if tool_choice in ("auto", "required") else [t for t in tools if t.name == tool_choice]
    tags = [
        {
            "type": "tag",
            "begin": f'{CALL_OPEN}{{"name": {json.dumps(t.name)}, "arguments": ',
            "content": {"type": "json_schema", "json_schema": t.parameters, "max_whitespace_cnt": MAX_WHITESPACE},
            "end": f"}}{CALL_CLOSE}",
        }
        for t in callable_tools
    ]
    calls = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": "\n",
        "at_least_one": True,
        "stop_after_first": not parallel_tool_calls,
    }
    if mode == "required":
        fmt: dict[str, Any] = calls
    elif text_schema is not None:  # auto + a response format: either the JSON answer or the calls
        fmt = {
            "type": "or",
            "elements": [
                {"type": "json_schema", "json_schema": text_schema, "max_whitespace_cnt": MAX_WHITESPACE},
                calls,
            ],
        }
    else:  # auto: free text, each call constrained from its trigger on
        fmt = {
            "type": "triggered_tags",
            "triggers": [CALL_OPEN],
            "tags": tags,
            "at_least_one": False,
            "stop_after_first": not parallel_tool_calls,
        }
    spec = GrammarSpec("structural_tag", json.dumps({"type": "structural_tag", "format": fmt}))
    return Constraint(spec, tools_param, callable_tools, mode, parallel_tool_calls)


async def compile_constraint(tokenizer: Any, constraint: Constraint, salt: str | None, timeout_s: float) -> Any:
    """The compiled grammar for SamplingParams.grammar (None when unconstrained), compiled off the event loop."""
    if constraint.spec is None:
        return None
    compile_ = getattr(tokenizer, "compile_grammar", None)
    if compile_ is None:
        raise InvalidRequest("This model does not support structured outputs or tool calling.", param=constraint.param)
    try:
        return await asyncio.to_thread(compile_, constraint.spec, salt, timeout_s)
    except GrammarError as e:
        raise InvalidRequest(str(e), param=constraint.param) from None


# --- the prompt --------------------------------------------------------------------------------------


def tool_prompt(constraint: Constraint) -> str:
    """The system text that shows the model its tools (the fallback for templates without tool support)."""
    lines = ["You can call these functions. Each is described by a JSON schema of its arguments:"]
    for t in constraint.tools:
        entry: dict[str, Any] = {"name": t.name}
        if t.description:
            entry["description"] = t.description
        entry["parameters"] = t.parameters
        lines.append(json.dumps(entry))
    how = f'{CALL_OPEN}{{"name": <function name>, "arguments": <arguments as a JSON object>}}{CALL_CLOSE}'
    if constraint.tool_mode == "required":
        lines.append(f"Answer only with a function call, written exactly as: {how}")
    else:
        lines.append(f"To call a function, write exactly: {how} Otherwise answer normally.")
    if constraint.parallel_tool_calls:
        lines.append("You may make several calls, one per line.")
    return "\n".join(lines)


def with_tool_prompt(messages: list[dict[str, str]], constraint: Constraint) -> list[dict[str, str]]:
    """Messages with the tool prompt joined to the leading system message (or as a new first one)."""
    if not constraint.parses_tools:
        return messages
    text = tool_prompt(constraint)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def render_tool_call(name: str, arguments: str) -> str:
    """An assistant's earlier tool call, in the syntax the model is asked to write."""
    try:
        args = json.dumps(json.loads(arguments)) if arguments.strip() else "{}"
    except ValueError:
        args = json.dumps(arguments)
    return f'{CALL_OPEN}{{"name": {json.dumps(name)}, "arguments": {args}}}{CALL_CLOSE}'


def render_tool_result(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


# --- parsing the output back -------------------------------------------------------------------------

_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_MAX_HEADER = 512


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(slots=True)
class ArgumentsDelta:
    index: int
    text: str


ParsedPiece = str | ToolCallStart | ArgumentsDelta  # str = content text


class ToolCallParser:
    """Incremental: `feed(text)` returns content and tool-call pieces as soon as they are certain; `finish()` the
    rest. Text that might still become `<tool_call>` or `}</tool_call>` is held back until it is decided."""

    def __init__(self, tool_names: set[str]) -> None:
        self.names = tool_names
        self._buf = ""
        self._state: Literal["text", "header", "args"] = "text"
        self._header = ""
        self.calls: list[dict[str, Any]] = []  # {"id", "name", "arguments"} as OpenAI's message.tool_calls

    def feed(self, text: str) -> list[ParsedPiece]:
        self._buf += text
        out: list[ParsedPiece] = []
        while True:
            if self._state == "text":
                at = self._buf.find(CALL_OPEN)
                if at < 0:
                    keep = _partial_suffix(self._buf, CALL_OPEN)
                    if len(self._buf) > keep:
                        out.append(self._buf[: len(self._buf) - keep])
                        self._buf = self._buf[len(self._buf) - keep :]
                    return out
                if at:
                    out.append(self._buf[:at])
                self._buf, self._header, self._state = self._buf[at + len(CALL_OPEN) :], "", "header"
            elif self._state == "header":
                m = _HEADER.match(self._buf)
                if m is None:
                    if len(self._buf) > _MAX_HEADER or not _could_be_header(self._buf):
                        out.append(CALL_OPEN + self._buf)  # not a call after all: it was text
                        self._buf, self._state = "", "text"
                        continue
                    return out
                try:
                    name = json.loads(f'"{m.group(1)}"')
                except ValueError:
                    name = m.group(1)
                call = {"id": call_id(), "name": name, "arguments": ""}
                self.calls.append(call)
                out.append(ToolCallStart(len(self.calls) - 1, call["id"], name))
                self._buf, self._state = self._buf[m.end() :], "args"
            else:
                end = "}" + CALL_CLOSE
                at = self._buf.find(end)
                piece = self._buf[:at] if at >= 0 else self._buf[: len(self._buf) - _partial_suffix(self._buf, end)]
                if piece:
                    self.calls[-1]["arguments"] += piece
                    out.append(ArgumentsDelta(len(self.calls) - 1, piece))
                if at < 0:
                    self._buf = self._buf[len(piece) :]
                    return out
                self._buf, self._state = self._buf[at + len(end) :], "text"

    def finish(self) -> list[ParsedPiece]:
        """The end of the output: whatever was held back (an unfinished call keeps what it streamed)."""
        out: list[ParsedPiece] = []
        if self._state == "text" and self._buf:
            out.append(self._buf)
        elif self._state == "header":
            out.append(CALL_OPEN + self._buf)
        elif self._state == "args" and self._buf:
            self.calls[-1]["arguments"] += self._buf
            out.append(ArgumentsDelta(len(self.calls) - 1, self._buf))
        self._buf = ""
        return out


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _could_be_header(text: str) -> bool:
    probe = '{"name": "'
    stripped = re.sub(r"\s+", "", text)
    return probe.replace(" ", "").startswith(stripped[: len(probe) - 1]) or stripped.startswith('{"name":"')
