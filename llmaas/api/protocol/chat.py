"""/v1/chat/completions schemas, OpenAI field for field (request, response, stream chunk).

Structured outputs (`response_format` json_object / json_schema) and tools (`tools`, `tool_choice`,
`parallel_tool_calls`, assistant `tool_calls` and `tool` messages in the history) are validated here; the
constraint itself is built in llmaas/api/serving/structured.py. What we refuse, clearly (400), rather than silently
ignore: the legacy `functions`, `audio` or non-text `modalities`, image/audio/file content parts, `function`
messages. What we accept and ignore: `store`, `metadata`, `service_tier`, `reasoning_effort`, `user`, any unknown
field (its name is logged).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_serializer

from llmaas.api.protocol.common import (
    HARD_MAX_TOKENS,
    HARD_MAX_TOP_LOGPROBS,
    CompletionHead,
    FinishReasonLiteral,
    OmitsEmptyUsage,
    ResponseModel,
    SamplingFields,
    StrictModel,
    Usage,
)
from llmaas.api.serving.structured import TOOL_NAME, render_tool_call, render_tool_result
from llmaas.config import Limits
from llmaas.engine.tokenizer import flatten_content
from llmaas.errors import InvalidRequest

HARD_MAX_MESSAGES = 100_000  # Limits.max_messages' own ceiling
HARD_MAX_TOOLS = 1024  # Limits.max_tools' own ceiling


class ContentPart(StrictModel):
    """One part of a message's content. Only `text` parts are supported."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None


class ToolCallFunction(StrictModel):
    name: str = Field(max_length=64)
    arguments: str = Field(description="The arguments as a JSON string, as the model wrote them.")


class ToolCall(StrictModel):
    """A tool call of an assistant message (in the history, and in our answers)."""

    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(StrictModel):
    model_config = ConfigDict(extra="allow")  # name, refusal, annotations…: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=10_000)] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None  # assistant messages
    tool_call_id: str | None = Field(None, max_length=256)  # tool messages

    def text(self, index: int) -> str:
        """The content as one string; refuses parts we cannot honour."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"Content parts of type {part.type[:64]!r} are not supported; this server accepts text only.",
                    param=f"messages[{index}].content[{j}].type",
                )
        return flatten_content([{"type": part.type, "text": part.text} for part in self.content])


class JsonSchemaFormat(StrictModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64, description="text, json_object or json_schema.")
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(StrictModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(StrictModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    function: FunctionDefinition


def schema_size(schema: Any) -> int:
    return len(json.dumps(schema, separators=(",", ":")).encode())


class ChatCompletionRequest(SamplingFields):
    """A chat completion request. Unknown fields are ignored (and their names logged)."""

    model: str = Field(max_length=512, description="A model id from GET /v1/models (base or fine-tuned).")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=HARD_MAX_MESSAGES)] = Field(
        description="The conversation so far; rendered with the model's own chat template."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=HARD_MAX_TOKENS, description="Deprecated alias of max_completion_tokens."
    )
    max_completion_tokens: int | None = Field(
        None,
        ge=1,
        le=HARD_MAX_TOKENS,
        description="Most tokens to generate. Default: min(default_max_tokens, room left in the context).",
    )
    logprobs: bool = Field(False, description="Return the chosen tokens' log probabilities.")
    top_logprobs: int | None = Field(
        None, ge=0, le=HARD_MAX_TOP_LOGPROBS, description="Alternatives per token (needs logprobs)."
    )
    tools: Annotated[list[ChatTool], Field(max_length=HARD_MAX_TOOLS)] | None = Field(
        None, description="Functions the model may call (type function, JSON-schema parameters)."
    )
    functions: list[Any] | None = Field(None, description="Not supported (deprecated by OpenAI): use tools.")
    tool_choice: Any = Field(
        None, description="none, auto (default with tools), required, or {type: function, function: {name}}."
    )
    parallel_tool_calls: bool = Field(True, description="Allow several tool calls in one answer.")
    response_format: ResponseFormat | None = Field(
        None,
        description="{type: text}, {type: json_object} or {type: json_schema, json_schema: {name, schema, strict}}.",
    )
    audio: Any = Field(None, description="Not supported.")
    modalities: list[str] | None = Field(None, max_length=8, description="Only [text] is supported.")

    def check_limits(self, limits: Limits) -> None:
        """Configured bounds and the features we refuse; called before anything is tokenized or allocated."""
        self.check_sampling_limits(limits, choices=self.n)
        if len(self.messages) > limits.max_messages:
            raise InvalidRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
        if self.top_logprobs is not None:
            if not self.logprobs:
                raise InvalidRequest("top_logprobs needs logprobs=true.", param="top_logprobs")
            if self.top_logprobs > limits.max_top_logprobs:
                raise InvalidRequest(f"top_logprobs is at most {limits.max_top_logprobs}.", param="top_logprobs")
        if self.functions:
            raise InvalidRequest("`functions` is deprecated and not supported; use `tools`.", param="functions")
        self._check_tools(limits)
        self._check_response_format(limits)
        if self.audio is not None or (self.modalities and set(self.modalities) != {"text"}):
            raise InvalidRequest("Only text output is supported.", param="modalities")

    def _check_tools(self, limits: Limits) -> None:
        tools = self.tools or []
        if len(tools) > limits.max_tools:
            raise InvalidRequest(f"At most {limits.max_tools} tools are allowed.", param="tools")
        names: set[str] = set()
        for i, t in enumerate(tools):
            if t.type != "function":
                raise InvalidRequest(
                    f"Tools of type {t.type[:64]!r} are not supported; only 'function' is.", param=f"tools[{i}].type"
                )
            if not TOOL_NAME.match(t.function.name):
                raise InvalidRequest(
                    "A function name is 1-64 characters of a-z, A-Z, 0-9, _ and -.", param=f"tools[{i}].function.name"
                )
            if t.function.name in names:
                raise InvalidRequest(f"Two tools are named {t.function.name!r}.", param=f"tools[{i}].function.name")
            names.add(t.function.name)
            params = t.function.parameters
            if params is not None:
                if params.get("type", "object") != "object":
                    raise InvalidRequest(
                        "Function parameters must be a JSON schema of type object.",
                        param=f"tools[{i}].function.parameters",
                    )
                if schema_size(params) > limits.max_schema_bytes:
                    raise InvalidRequest(
                        f"The schema is larger than {limits.max_schema_bytes} bytes.",
                        param=f"tools[{i}].function.parameters",
                    )
        choice = self.tool_choice
        if choice is None or choice == "none":
            return
        if not tools:
            raise InvalidRequest("tool_choice is only allowed when tools are given.", param="tool_choice")
        if choice in ("auto", "required"):
            return
        name = None
        if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name")
        if not isinstance(name, str):
            raise InvalidRequest(
                "tool_choice is 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': …}}.",
                param="tool_choice",
            )
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names the function {name[:64]!r}, which is not among the tools.", param="tool_choice"
            )

    def _check_response_format(self, limits: Limits) -> None:
        rf = self.response_format
        if rf is None or rf.type in ("text", "json_object"):
            return
        if rf.type != "json_schema":
            raise InvalidRequest(
                f"response_format {rf.type[:64]!r} is not supported; use text, json_object or json_schema.",
                param="response_format.type",
            )
        if rf.json_schema is None:
            raise InvalidRequest(
                "response_format json_schema needs a json_schema object.", param="response_format.json_schema"
            )
        if not TOOL_NAME.match(rf.json_schema.name):
            raise InvalidRequest(
                "The schema name is 1-64 characters of a-z, A-Z, 0-9, _ and -.",
                param="response_format.json_schema.name",
            )
        schema = rf.json_schema.schema_
        if schema is not None and schema_size(schema) > limits.max_schema_bytes:
            raise InvalidRequest(
                f"The schema is larger than {limits.max_schema_bytes} bytes.",
                param="response_format.json_schema.schema",
            )

    @property
    def named_tool(self) -> str | None:
        """The function tool_choice names, if it names one."""
        if isinstance(self.tool_choice, dict):
            return str(self.tool_choice["function"]["name"])
        return None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def engine_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_messages(self) -> list[dict[str, str]]:
        """Messages as the chat template expects them: role + one content string."""
        out = []
        for i, m in enumerate(self.messages):
            if m.role == "function":
                raise InvalidRequest(
                    "Messages with role 'function' are deprecated and not supported; use 'tool'.",
                    param=f"messages[{i}].role",
                )
            if m.role == "tool":  # a tool's result, as the fallback tool prompt shows it
                out.append({"role": "user", "content": render_tool_result(m.text(i))})
                continue
            role = "system" if m.role == "developer" else m.role  # "developer" is OpenAI's new name for system
            text = m.text(i)
            if m.role == "assistant" and m.tool_calls:
                text += "\n".join(render_tool_call(c.function.name, c.function.arguments) for c in m.tool_calls)
            out.append({"role": role, "content": text})
        return out


# --- responses ---------------------------------------------------------------------------------------


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(ResponseModel):
    content: list[TokenLogprobOut] | None = None
    refusal: list[TokenLogprobOut] | None = None


class AssistantMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None  # only when the model called tools

    @model_serializer(mode="wrap")
    def _omit_no_calls(self, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("tool_calls") is None:
            out.pop("tool_calls", None)
        return out


class ChatChoice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonLiteral | None = None


class ChatCompletion(CompletionHead):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class _DropsNone(ResponseModel):
    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class FunctionDelta(_DropsNone):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_DropsNone):
    """First delta of a call: index, id, type and function.name (arguments ""); then function.arguments pieces."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChoiceDelta(ResponseModel):
    """Only the keys that changed, as OpenAI sends them (role first, then content or tool_calls, then `{}` with the
    finish)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonLiteral | None = None


class ChatCompletionChunk(OmitsEmptyUsage, CompletionHead):
    """One server-sent event of a streamed chat completion."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(None, description="Only on the last chunk, with stream_options.include_usage.")
