"""The engine's boundary: only `EngineRequest` goes in, only `TokenEvent` comes out.

The engine knows token ids, sampling parameters, adapters and a cache salt. It knows nothing of HTTP, tenants,
chat messages or API keys: the API layer turns those into an `EngineRequest` (after validating every number).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

# The projections a LoRA adapter may target: what engine/lora.py serves, the fine-tuning API accepts and the trainer
# adapts by default (HF names, per layer).
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """What a constrained sequence must produce, before compilation: a JSON schema, or an xgrammar structural tag
    (JSON text in both cases). Built by the API layer (llmaas/api/serving/structured.py) and compiled by
    `llmaas.engine.structured.compile_grammar` into the `SamplingParams.grammar` the engine enforces."""

    kind: Literal["json_schema", "structural_tag"]
    source: str


class GrammarError(ValueError):
    """A GrammarSpec cannot be compiled (invalid or unsupported schema, or past the time bound); safe to show."""


@dataclass(slots=True)
class SamplingParams:
    """Per-sequence sampling. Every value here has already been bounded by the API layer."""

    max_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None  # same seed + same request => same output
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)  # never emitted, also when split across tokens
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None = no logprobs; k >= 0 = chosen token's logprob + top-k alternatives
    skip_special_tokens: bool = True
    # A compiled grammar (llmaas.engine.structured.CompiledGrammar): each token is masked to what it allows, and the
    # sequence stops when it is complete. Compiled before the request reaches the engine, never on the step thread.
    grammar: Any = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    adapter_id: str | None = None  # a LoRA adapter registered with the engine (by our own id, never a client path)
    cache_salt: str | None = None  # tenant: prefix-cache blocks are only shared between equal salts
    echo_prompt_logprobs: bool = False  # completions echo+logprobs: score the prompt tokens too
    priority: int = 0  # INTERACTIVE (0) or BATCH (1): larger runs only in capacity smaller leaves free


INTERACTIVE = 0  # EngineRequest.priority of a request someone waits for
BATCH = 1  # EngineRequest.priority of a Batch API line: admitted last, preempted first


class FinishReason(str, enum.Enum):  # noqa: UP042 - StrEnum changes format() of members; the wire uses .value
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context ran out
    ABORT = "abort"  # client went away or server shutting down
    ERROR = "error"  # this sequence failed inside the engine; the engine goes on


class RequestStatus(enum.IntEnum):
    """Lifecycle of a sequence inside the engine. Anything after PREEMPTED is finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6

    @property
    def finished(self) -> bool:
        return self > RequestStatus.PREEMPTED

    @property
    def finish_reason(self) -> FinishReason | None:
        return _FINISHED_REASON_MAP.get(self)


_FINISHED_REASON_MAP = {
    RequestStatus.FINISHED_STOPPED: FinishReason.STOP,
    RequestStatus.FINISHED_LENGTH: FinishReason.LENGTH,
    RequestStatus.FINISHED_ABORTED: FinishReason.ABORT,
    RequestStatus.FINISHED_ERROR: FinishReason.ERROR,
}


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    token: str  # the token's text (may be a partial UTF-8 piece, shown as OpenAI does)
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (token_id, text, logprob), best first


@dataclass(slots=True)
class TokenEvent:
    """What the engine emits for one request, one or more times. The last event has `finished=True`."""

    request_id: str
    token_ids: list[int]  # new tokens since the previous event
    text: str  # new text since the previous event: UTF-8 complete, stop strings removed
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0  # total so far
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    prompt_logprobs: list[TokenLogprob | None] | None = None  # only with echo_prompt_logprobs, on the first event
    error: str | None = None  # with FinishReason.ERROR: a client-safe message
    # The core's clock (time.monotonic()) when it received the request and when it made this event: time to first
    # token and inter-token latency are measured from these. On Linux that clock is CLOCK_MONOTONIC, one for every
    # process of the machine, so the times of an engine process compare with the API process's.
    arrival_time: float = 0.0
    time: float = 0.0


@dataclass(slots=True)
class EngineStats:
    """Live counters the metrics layer reads (cheap to compute, read at scrape time)."""

    waiting: int = 0
    running: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_queries: int = 0
    last_step_tokens: int = 0
    last_step_seqs: int = 0
    steps: int = 0
    loaded_adapters: int = 0
