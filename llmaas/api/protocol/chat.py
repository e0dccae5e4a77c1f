"""/v1/chat/completions schemas, OpenAI field for field (request, response, stream chunk).

What we refuse, clearly (400), rather than silently ignore: `tools`/`functions` (no tool calling), `response_format`
other than `text` (no constrained decoding), `audio` or non-text `modalities`, image/audio/file content parts, and
`tool`/`function` messages. What we accept and ignore: `tool_choice: "none"`, `parallel_tool_calls`, `store`,
`metadata`, `service_tier`, `reasoning_effort`, `user`, any unknown field (its name is logged).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from llmaas.api.protocol.common import (
    HARD_MAX_TOKENS,
    HARD_MAX_TOP_LOGPROBS,
    FinishReasonLiteral,
    OmitsEmptyUsage,
    ResponseModel,
    SamplingFields,
    StrictModel,
    Usage,
)
from llmaas.config import Limits
from llmaas.errors import InvalidRequest

HARD_MAX_MESSAGES = 100_000  # Limits.max_messages' own ceiling


class ContentPart(StrictModel):
    """One part of a message's content. Only `text` parts are supported."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(StrictModel):
    model_config = ConfigDict(extra="allow")  # name, refusal, annotations…: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=10_000)] | None = None
    name: str | None = Field(None, max_length=256)

    def text(self, index: int) -> str:
        """The content as one string; refuses parts we cannot honour."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"Content parts of type {part.type[:64]!r} are not supported; this server accepts text only.",
                    param=f"messages[{index}].content[{j}].type",
                )
            texts.append(part.text)
        return "\n".join(texts)


class ResponseFormat(StrictModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)


class ChatCompletionRequest(SamplingFields):
    """A chat completion request. Unknown fields are ignored (and their names logged)."""

    model: str = Field(max_length=512, description="A model id from GET /v1/models (base or fine-tuned).")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=HARD_MAX_MESSAGES)] = Field(
        description="The conversation so far; rendered with the model's own chat template."
    )
    max_tokens: int | None = Field(None, ge=1, le=HARD_MAX_TOKENS, description="Deprecated alias of max_completion_tokens.")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=HARD_MAX_TOKENS, description="Most tokens to generate. Default: min(default_max_tokens, room left in the context)."
    )
    logprobs: bool = Field(False, description="Return the chosen tokens' log probabilities.")
    top_logprobs: int | None = Field(None, ge=0, le=HARD_MAX_TOP_LOGPROBS, description="Alternatives per token (needs logprobs).")
    tools: list[Any] | None = Field(None, description="Not supported: a non-empty list is refused.")
    functions: list[Any] | None = Field(None, description="Not supported: a non-empty list is refused.")
    tool_choice: Any = Field(None, description="Only `none` (or absent) is accepted.")
    response_format: ResponseFormat | None = Field(None, description="Only {type: text} is supported.")
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
        if self.tools or self.functions:
            raise InvalidRequest("Tool calling is not supported by this server.", param="tools" if self.tools else "functions")
        if self.tool_choice not in (None, "none"):
            raise InvalidRequest("Tool calling is not supported by this server.", param="tool_choice")
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequest(
                f"response_format {self.response_format.type[:64]!r} is not supported; only 'text' is.", param="response_format"
            )
        if self.audio is not None or (self.modalities and set(self.modalities) != {"text"}):
            raise InvalidRequest("Only text output is supported.", param="modalities")

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
            if m.role in ("tool", "function"):
                raise InvalidRequest(f"Messages with role {m.role!r} need tool calling, which is not supported.", param=f"messages[{i}].role")
            role = "system" if m.role == "developer" else m.role  # "developer" is OpenAI's new name for system
            out.append({"role": role, "content": m.text(i)})
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


class ChatChoice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonLiteral | None = None


class ChatCompletion(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class ChoiceDelta(ResponseModel):
    """Only the keys that changed, as OpenAI sends them (role first, then content, then `{}` with the finish)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonLiteral | None = None


class ChatCompletionChunk(OmitsEmptyUsage):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(None, description="Only on the last chunk, with stream_options.include_usage.")
