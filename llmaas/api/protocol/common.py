"""Pieces shared by the OpenAI request/response schemas: the base model, usage, errors, logprobs, sampling fields.

Schemas here are pure pydantic: they validate and translate themselves (`check_limits`, `to_sampling_params`), they
do no I/O and know nothing of engines or HTTP.

Bounds come in two layers (SECURITY.md #1): every count has a hard `Field(le=…)` equal to the widest value
`Limits` itself accepts, so nothing unbounded is ever parsed; `check_limits(settings.limits)` then applies the
configured limit before anything is allocated. (Pydantic schemas are static classes; FastAPI validates the body
without any per-app context, hence the second step, called first thing by every serving handler.)
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from llmaas.config import Limits
from llmaas.engine.types import SamplingParams
from llmaas.errors import InvalidRequest

logger = logging.getLogger("llmaas.api")

# Hard ceilings: the widest values `llmaas.config.Limits` accepts (its own `le=` bounds).
HARD_MAX_N = 128
HARD_MAX_STOP = 16
HARD_MAX_STOP_LEN = 4096
HARD_MAX_LOGIT_BIAS = 100_000
HARD_MAX_TOP_LOGPROBS = 20
HARD_MAX_TOKENS = 1_048_576
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1

StopString = Annotated[str, Field(max_length=HARD_MAX_STOP_LEN)]


class OpenAIBaseModel(BaseModel):
    """Request base: unknown fields are accepted (OpenAI clients send extras) and their *names* logged, never values.

    Strict about JSON types, as OpenAI is: a boolean or a string is never a number (`"max_tokens": true` is not 1,
    `"5"` is not 5), a fraction is never an integer (1.5, 1.0), and only `true`/`false` are booleans. An integer where
    a float is expected is fine (JSON has one number type). Subclasses inherit this; nested models should derive from
    this base (or `StrictModel`) too, since pydantic's `strict` does not reach into another model's fields.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _log_ignored_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            logger.info("ignoring unknown request fields %s in %s", sorted(self.model_extra)[:20], type(self).__name__)
        return self


class StrictModel(BaseModel):
    """A nested request part that keeps its own extra-field policy but shares the JSON-type strictness above."""

    model_config = ConfigDict(extra="allow", strict=True)


class ResponseModel(BaseModel):
    """Response base: what we send; extra fields are ours to decide."""

    model_config = ConfigDict(extra="forbid")


class RowObject(ResponseModel):
    """A response object that shows a store row field for field (`FileObject.of(record)`): only the fields declared
    here are read from the row's attributes, so a column added to a table is never shown by accident."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @classmethod
    def of(cls, row: object) -> Self:
        return cls.model_validate(row)


# --- errors ------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error object; every non-2xx answer of the API has this shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid request (bad parameter, context length exceeded, malformed JSON)"),
        (401, "Missing or invalid API key"),
        (404, "Model not found"),
        (413, "Request body too large"),
        (429, "Rate limited, quota exceeded or server overloaded (see Retry-After)"),
        (500, "Server error"),
    ]
}


# --- usage -------------------------------------------------------------------------------------------


class PromptTokensDetails(ResponseModel):
    cached_tokens: int = Field(0, description="Prompt tokens served from this tenant's prefix cache.")


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class OmitsEmptyUsage(ResponseModel):
    """A response whose `usage` key is left out when None, as OpenAI does (streams carry usage on the last chunk only)."""

    @model_serializer(mode="wrap")
    def _drop_empty_usage(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return dict(data)


class CompletionHead(ResponseModel):
    """The keys a chat completion, a chat chunk and a text completion all start with, in OpenAI's order; each names
    its own `object` and adds its `choices` and `usage` after them."""

    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str | None = None


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = Field(
        False, description="Send one more chunk with `usage` (and empty `choices`) before [DONE]."
    )


# --- sampling fields shared by chat and completions --------------------------------------------------


class SamplingFields(OpenAIBaseModel):
    """The generation parameters /v1/chat/completions and /v1/completions share."""

    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy. Default 1.")
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="Nucleus sampling mass. 0 behaves as greedy.")
    top_k: int | None = Field(
        None, ge=0, le=1_000_000, description="Extension: keep the k most likely tokens (0 = off)."
    )
    min_p: float | None = Field(
        None, ge=0.0, le=1.0, description="Extension: drop tokens below min_p × the top probability."
    )
    repetition_penalty: float | None = Field(
        None, gt=0.0, le=10.0, description="Extension: HF-style repetition penalty."
    )
    n: int = Field(1, ge=1, le=HARD_MAX_N, description="Choices to generate (bounded by limits.max_n).")
    stop: StopString | Annotated[list[StopString], Field(max_length=HARD_MAX_STOP)] | None = Field(
        None, description="Up to limits.max_stop_sequences strings; generation stops before them (never emitted)."
    )
    seed: int | None = Field(
        None,
        ge=SEED_MIN,
        le=SEED_MAX,
        description="Same seed + same request => same output. With n>1 each choice gets a derived seed.",
    )
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(
        None, max_length=HARD_MAX_LOGIT_BIAS, description="Token id (as a string) -> bias in [-100, 100]."
    )
    user: str | None = Field(None, max_length=256, description="Accepted and ignored (end-user id for your own logs).")
    stream: bool = Field(False, description="Send server-sent events, as OpenAI does.")
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(False, description="Extension: keep generating past EOS (benchmarks).")

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]  # an empty stop string means nothing

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_sampling_limits(self, limits: Limits, choices: int) -> None:
        """The configured bounds (the schema enforced the hard ones). `choices` = sequences this request generates."""
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")
        if choices > limits.max_n:
            raise InvalidRequest(f"This request asks for {choices} choices; the limit is {limits.max_n}.", param="n")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > limits.max_stop_sequences:
            raise InvalidRequest(f"At most {limits.max_stop_sequences} stop sequences are allowed.", param="stop")
        if any(len(s) > limits.max_stop_length for s in stops):
            raise InvalidRequest(f"Stop sequences are at most {limits.max_stop_length} characters.", param="stop")
        if self.logit_bias and len(self.logit_bias) > limits.max_logit_bias:
            raise InvalidRequest(f"logit_bias has at most {limits.max_logit_bias} entries.", param="logit_bias")

    def logit_bias_ids(self, vocab_size: int) -> dict[int, float]:
        """logit_bias with integer keys, each a real token id, each bias within [-100, 100]."""
        out: dict[int, float] = {}
        for key, bias in (self.logit_bias or {}).items():
            try:
                token_id = int(key)
            except ValueError:
                raise InvalidRequest(f"logit_bias keys are token ids; got {key[:32]!r}.", param="logit_bias") from None
            if not 0 <= token_id < vocab_size:
                raise InvalidRequest(
                    f"logit_bias token id {token_id} is outside the vocabulary (0..{vocab_size - 1}).",
                    param="logit_bias",
                )
            if not -100.0 <= bias <= 100.0:
                raise InvalidRequest(f"logit_bias values are within [-100, 100]; got {bias}.", param="logit_bias")
            out[token_id] = float(bias)
        return out

    def to_sampling_params(
        self, *, max_tokens: int, vocab_size: int, logprobs: int | None, choice: int = 0, grammar: Any = None
    ) -> SamplingParams:
        """Engine parameters for choice number `choice` (its own seed, derived from `seed`)."""
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        if top_p <= 0.0:  # "keep no mass" is the most likely token only
            temperature, top_p = 0.0, 1.0
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=min(self.top_k or 0, vocab_size),  # k beyond the vocabulary means "all"
            min_p=self.min_p or 0.0,
            seed=derive_seed(self.seed, choice),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            logit_bias=self.logit_bias_ids(vocab_size),
            stop=self.stop_list,
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            grammar=grammar,
        )


def derive_seed(seed: int | None, choice: int) -> int | None:
    """Choice 0 keeps the seed (so n=1 and the first of n agree); others get distinct, reproducible seeds."""
    if seed is None:
        return None
    if choice == 0:
        return seed % 2**63
    return (seed * 6364136223846793005 + 1442695040888963407 * choice) % 2**63


FinishReasonLiteral = Literal["stop", "length", "tool_calls"]  # OpenAI's finish_reason values that this server produces
