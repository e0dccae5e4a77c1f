"""Token-budget continuous batching: which requests run this step, and how many tokens each. Pure Python, no torch.

Requests join the running batch at the next step and leave the moment they finish; decode tokens and prefill
chunks share one step under `max_num_batched_tokens`. When the KV cache is full the youngest running request is
preempted (its blocks freed, recomputed later, helped by the prefix cache) — the engine never runs out of memory.

The scheduler does not know tensors, sampling or text: it gets sampled token ids back in `update_from_output`
and decides only *finished by length / EOS / stop token*. Stop strings are the detokenizer's call (core.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.types import EngineRequest, RequestStatus, SamplingParams


@dataclass(eq=False)
class Request:
    """One sequence inside the engine."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    adapter_id: str | None = None
    cache_salt: str | None = None
    echo_prompt_logprobs: bool = False
    priority: int = 0  # types.INTERACTIVE or types.BATCH (see schedule's NOTE(batch))
    status: RequestStatus = RequestStatus.WAITING
    all_token_ids: list[int] = field(default_factory=list)  # prompt + output
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_cached_tokens: int = -1  # prompt tokens served by the prefix cache (set at first admission)
    block_hashes: list[bytes] = field(default_factory=list)
    num_preemptions: int = 0
    arrival_time: float = 0.0  # when the core received it (time.monotonic())

    def __post_init__(self) -> None:
        self.all_token_ids = list(self.prompt_token_ids)

    @classmethod
    def from_engine_request(cls, r: EngineRequest, arrival_time: float = 0.0) -> Request:
        return cls(
            r.request_id,
            list(r.prompt_token_ids),
            r.params,
            r.adapter_id,
            r.cache_salt,
            r.echo_prompt_logprobs,
            r.priority,
            arrival_time=arrival_time,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def use_prefix_cache(self) -> bool:
        return not self.echo_prompt_logprobs  # scoring the prompt needs the logits of every prompt token

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)


@dataclass(slots=True)
class ScheduledSeq:
    request: Request
    start: int  # position of the first scheduled token (= num_computed_tokens before the step)
    num_new: int  # tokens computed this step: all_token_ids[start : start + num_new]
    block_ids: list[int]
    sample: bool  # the chunk reaches the end of the known tokens: sample the next one


@dataclass(slots=True)
class SchedulerOutput:
    seqs: list[ScheduledSeq]
    preempted: list[Request]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.seqs)


class Scheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: list[int],
    ) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = set(eos_token_ids)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0  # since start, for tests and logs

    def add_request(self, req: Request) -> None:
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # --- schedule ----------------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        # NOTE: there are no prefill and decode phases. Each request has `num_computed_tokens` chasing
        # `num_tokens` (prompt + output so far); a step hands each request up to the difference, out of one shared
        # token budget. A new prompt is a request far behind (chunked prefill when the budget is short), a
        # decoding one is exactly one token behind, a prefix-cache hit starts ahead, and a preempted one restarts
        # from zero. Running requests go first (decodes before prefill chunks, so streams keep flowing), then
        # waiting ones join in arrival order while the budget, the seat count and the KV cache allow.
        # NOTE(batch): priorities are classes served in order (interactive 0, then batch 1): a class's running
        # requests and then its waiting ones take from the budget, seats and blocks before the next class sees
        # what is left, so a batch sequence runs only in capacity interactive work leaves free. When the cache is
        # full the victim is the youngest running request of the lowest class, and an interactive request that
        # does not fit evicts running batch sequences before it waits. A step that computes a prompt chunk of a
        # higher class leaves the lower ones out (they pause one step), so an interactive request's time to first
        # token does not grow with the batch beside it. With one class this is plain FCFS.
        budget = self.max_num_batched_tokens
        scheduled: dict[str, int] = {}
        preempted: list[Request] = []
        pending: set[bytes] = set()  # prefix blocks that requests admitted in this step are about to compute
        blocked = False  # a waiting request did not fit: nobody of its class or a lower one overtakes it
        for prio in sorted({r.priority for r in self.running} | {r.priority for r in self.waiting}):
            if any(n > 1 for n in scheduled.values()):
                break  # a higher class's prompt takes this step alone: batch decodes must not delay its first token
            budget = self._schedule_running(prio, budget, scheduled, preempted)
            if not preempted and not blocked:
                budget, blocked = self._admit_waiting(prio, budget, scheduled, preempted, pending)

        seqs = []
        for req in self.running:
            n = scheduled.get(req.request_id, 0)
            if n:
                end = req.num_computed_tokens + n
                block_ids = self.kv.block_ids(req.request_id)
                seqs.append(ScheduledSeq(req, req.num_computed_tokens, n, block_ids, end == req.num_tokens))
        return SchedulerOutput(seqs, preempted)

    def _schedule_running(self, prio: int, budget: int, scheduled: dict[str, int], preempted: list[Request]) -> int:
        """Tokens for the running requests of one class (decodes first); preempts when the cache is full."""
        mine = sorted(
            (r for r in self.running if r.priority == prio), key=lambda r: r.num_tokens - r.num_computed_tokens > 1
        )
        for req in mine:
            if budget == 0:
                break
            if req.status != RequestStatus.RUNNING:  # preempted to make room for an older request
                continue
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            while not self.kv.allocate_slots(req, n):
                victim = self._victim()
                self._preempt(victim)
                preempted.append(victim)
                budget += scheduled.pop(victim.request_id, 0)
                if victim is req:
                    break
            else:
                scheduled[req.request_id] = n
                budget -= n
        return budget

    def _admit_waiting(
        self, prio: int, budget: int, scheduled: dict[str, int], preempted: list[Request], pending: set[bytes]
    ) -> tuple[int, bool]:
        """Admit waiting requests of one class in arrival order; (budget left, whether one did not fit)."""
        for req in [r for r in self.waiting if r.priority == prio]:
            if budget == 0:
                return budget, True
            while True:
                hits, num_hit = self.kv.get_computed_blocks(req)
                first_miss = req.block_hashes[len(hits)] if len(req.block_hashes) > len(hits) else None
                sibling = req.use_prefix_cache and first_miss in pending
                n = min(req.num_tokens - num_hit, budget)
                if len(self.running) < self.max_num_seqs and (sibling or self.kv.allocate_slots(req, n, hits)):
                    break
                if not self._evict_below(prio, preempted):
                    return budget, True  # first come, first served: nobody overtakes a request that does not fit
            if sibling:
                continue  # n>1 / same system prompt: wait one step and reuse the sibling's blocks instead
            self.waiting.remove(req)
            if req.num_cached_tokens < 0:  # count the prompt once, not again after a preemption
                req.num_cached_tokens = num_hit
                self.kv.count_query(req.num_tokens, num_hit)
            req.num_computed_tokens = num_hit
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            scheduled[req.request_id] = n
            budget -= n
            if req.use_prefix_cache:
                pending.update(req.block_hashes[len(hits) :])
        return budget, False

    def _victim(self) -> Request:
        """The request to preempt when the cache is full: the youngest running one of the lowest class."""
        lowest = max(r.priority for r in self.running)
        return next(r for r in reversed(self.running) if r.priority == lowest)

    def _evict_below(self, prio: int, preempted: list[Request]) -> bool:
        """Preempt the youngest running request of a class below `prio` (to seat one of `prio`); False if none."""
        lower = [r for r in self.running if r.priority > prio]
        if not lower:
            return False
        victim = max(lower, key=lambda r: (r.priority, self.running.index(r)))
        self._preempt(victim)
        preempted.append(victim)
        return True

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        req.status = RequestStatus.PREEMPTED
        self.waiting.appendleft(req)

    # --- update ------------------------------------------------------------------------------------------

    def update_from_output(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[tuple[Request, int]]:
        """Advance every scheduled request; append its sampled token. Returns (request, new token) per new token.

        Requests that finish (length, EOS, stop token) are finished here and their blocks freed; the caller reads
        `request.status`. A request missing from `sampled` although it should sample failed in this step (the
        caller has already finished it with an error).
        """
        results: list[tuple[Request, int]] = []
        for s in out.seqs:
            req = s.request
            if req.status.finished:
                continue
            req.num_computed_tokens += s.num_new
            self.kv.cache_full_blocks(req)
            if not s.sample:
                continue
            token = sampled.get(req.request_id)
            if token is None:
                continue
            req.append_token(token)
            status = self._check_stop(req, token)
            if status is not None:
                self.finish_request(req, status)
            results.append((req, token))
        return results

    def _check_stop(self, req: Request, token: int) -> RequestStatus | None:
        p = req.params
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return RequestStatus.FINISHED_STOPPED
        if len(req.output_token_ids) >= p.max_tokens or req.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def finish_request(self, req: Request, status: RequestStatus) -> None:
        """Finish (stop, length, abort, error): leave the batch and return the KV blocks at once."""
        if req.status.finished:
            return
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        req.status = status
        self.kv.free(req)
        self.requests.pop(req.request_id, None)
