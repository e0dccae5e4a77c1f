"""/v1/completions schemas (OpenAI's legacy text completions), field for field.

`prompt` may be a string, a list of strings, a token array or a list of token arrays; each prompt gets `n` choices
(choice index = prompt index × n + j) and the total is bounded by `limits.max_n`. `logprobs` is OpenAI's legacy
integer (alternatives per token) and answers in the legacy shape (tokens, token_logprobs, top_logprobs,
text_offset). Refused: a non-empty `suffix` (no fill-in-the-middle), `best_of` other than n.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from llmaas.api.protocol.common import (
    HARD_MAX_N,
    HARD_MAX_TOKENS,
    HARD_MAX_TOP_LOGPROBS,
    CompletionHead,
    FinishReasonLiteral,
    OmitsEmptyUsage,
    ResponseModel,
    SamplingFields,
    Usage,
)
from llmaas.config import Limits
from llmaas.errors import InvalidRequest

TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1, max_length=HARD_MAX_TOKENS)]


class CompletionRequest(SamplingFields):
    """A text completion request. Unknown fields are ignored (and their names logged)."""

    model: str = Field(max_length=512, description="A model id from GET /v1/models (base or fine-tuned).")
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=HARD_MAX_N)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=HARD_MAX_N)]
    ) = Field(description="A string, a list of strings, a token array or a list of token arrays.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=HARD_MAX_TOKENS,
        description="Most tokens to generate. Default: min(default_max_tokens, room left), OpenAI's is 16.",
    )
    logprobs: int | None = Field(
        None, ge=0, le=HARD_MAX_TOP_LOGPROBS, description="Alternatives per token (legacy shape)."
    )
    echo: bool = Field(False, description="Put the prompt in front of each completion (and score it with logprobs).")
    suffix: str | None = Field(None, description="Not supported (no fill-in-the-middle): must be empty.")
    best_of: int | None = Field(None, ge=1, le=HARD_MAX_N, description="Only best_of = n is supported.")

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each a string or a token array."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)  # type: ignore[arg-type]

    def check_limits(self, limits: Limits) -> None:
        """Configured bounds and the features we refuse; called before anything is tokenized or allocated."""
        prompts = self.prompts()
        self.check_sampling_limits(limits, choices=len(prompts) * self.n)
        if self.logprobs is not None and self.logprobs > limits.max_top_logprobs:
            raise InvalidRequest(f"logprobs is at most {limits.max_top_logprobs}.", param="logprobs")
        if self.suffix:
            raise InvalidRequest("suffix is not supported by this server.", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of is only supported when equal to n.", param="best_of")


# --- responses ---------------------------------------------------------------------------------------


class LegacyLogprobs(ResponseModel):
    """OpenAI's legacy logprobs: parallel lists, one entry per token (prompt tokens first when echo)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: LegacyLogprobs | None = None
    finish_reason: FinishReasonLiteral | None = None


class Completion(OmitsEmptyUsage, CompletionHead):
    """A text completion; streamed, each chunk has this same shape with partial `text`."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None
