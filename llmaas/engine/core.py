"""EngineCore: the synchronous engine step — schedule → run the model → sample → update — and TokenEvents out.

It is driven by one thread (client.py's step loop); `add_request` and `abort_request` may be called from any
thread (they only append to an inbox read at the top of the next step). A failure inside a step fails only the
sequences it concerns, with FinishReason.ERROR and a client-safe message; the loop itself goes on.

It knows nothing of asyncio, HTTP or tenants (cache_salt is an opaque string).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llmaas.engine.runner import Runner, RunnerOutput
from llmaas.engine.sampler import SamplingRow
from llmaas.engine.scheduler import Request, ScheduledSeq, Scheduler, SchedulerOutput
from llmaas.engine.structured import GrammarState
from llmaas.engine.types import (
    EngineRequest,
    EngineStats,
    FinishReason,
    RequestStatus,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)

log = logging.getLogger(__name__)

ERROR_MESSAGE = "The engine failed while generating this sequence."


@dataclass
class _SeqState:
    """Per-request state that is not scheduling: text, randomness, logprobs to report."""

    detok: Any
    generator: torch.Generator | None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    sent_first: bool = False
    logprob: TokenLogprob | None = None
    grammar: GrammarState | None = None  # constrained decoding (response_format, tools): advanced per sampled token


@dataclass
class _Step:
    events: list[TokenEvent] = field(default_factory=list)
    sampled: dict[str, int] = field(default_factory=dict)


class EngineCore:
    def __init__(
        self,
        runner: Runner,
        scheduler: Scheduler,
        sampler: Any,
        tokenizer: Any,
        detokenizer_factory: Callable[..., Any],
        *,
        max_model_len: int,
        lora_manager: Any = None,
    ) -> None:
        self.runner, self.scheduler, self.sampler, self.tokenizer = runner, scheduler, sampler, tokenizer
        self.detokenizer_factory = detokenizer_factory
        self.max_model_len = max_model_len
        self.lora_manager = lora_manager
        self._inbox: deque[tuple[str, Any]] = deque()  # deque.append/popleft are thread-safe
        self._states: dict[str, _SeqState] = {}
        self._stats = EngineStats(kv_blocks_total=scheduler.kv.num_blocks)

    # --- inbox (any thread) ------------------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        self._inbox.append(("add", (request, time.monotonic())))  # its arrival: where time to first token starts

    def abort_request(self, request_id: str) -> None:
        self._inbox.append(("abort", request_id))

    def has_work(self) -> bool:
        return bool(self._inbox) or self.scheduler.has_work()

    def num_waiting(self) -> int:
        return len(self._inbox) + len(self.scheduler.waiting)

    # --- the step ----------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run one short request through every stage before the first client's: the first forward of a fresh
        process pays one-time set-up (oneDNN's, the kernels' first calls): a 128-token prompt's first step took
        557 ms here, the next one of that length 56 ms. Echo requests skip the
        prefix cache, so it leaves no cached block behind."""
        params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
        self.add_request(EngineRequest("warm-up", list(range(8)), params, echo_prompt_logprobs=True))
        while self.has_work():
            self.step()

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        st = _Step()
        self._drain_inbox(st)
        sched = self.scheduler.schedule()
        if sched.seqs:
            for part, out in self._execute(sched, st):
                self._prompt_logprobs(part, out, st)
                self._sample(part, out, st)
            for req, token in self.scheduler.update_from_output(sched, st.sampled):
                self._emit(req, token, st)
        self._update_stats(sched)
        return st.events

    # --- callees -----------------------------------------------------------------------------------------

    def _drain_inbox(self, st: _Step) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "abort":
                req = self.scheduler.requests.get(item)
                if req is not None:
                    self.scheduler.finish_request(req, RequestStatus.FINISHED_ABORTED)
                    self._finish_event(req, FinishReason.ABORT, st)
                continue
            request, arrival = item
            req = Request.from_engine_request(request, arrival)
            try:
                problem = self._check(request)
                if problem is None:
                    self._admit(req)
            except Exception:
                log.exception("request %s could not be admitted", req.request_id)
                problem = ERROR_MESSAGE
            if problem:
                req.status = RequestStatus.FINISHED_ERROR
                st.events.append(self._event(req, _SeqState(None, None), [], "", None, problem))

    def _admit(self, req: Request) -> None:
        p = req.params
        gen = None
        if p.seed is not None:
            gen = torch.Generator(device=self.runner.device)
            gen.manual_seed(p.seed)
        detok = self.detokenizer_factory(self.tokenizer, req.prompt_token_ids, p)
        grammar = GrammarState(p.grammar) if p.grammar is not None else None  # compiled already: cheap
        self._states[req.request_id] = _SeqState(
            detok, gen, [None] if req.echo_prompt_logprobs else None, grammar=grammar
        )
        self.scheduler.add_request(req)

    def _check(self, r: EngineRequest) -> str | None:
        if not r.prompt_token_ids:
            return "The prompt is empty."
        if len(r.prompt_token_ids) >= self.max_model_len:
            return f"The prompt is longer than this model's context ({self.max_model_len} tokens)."
        if r.params.max_tokens < 1:
            return "max_tokens must be at least 1."
        vocab = self.runner.vocab_size
        if min(r.prompt_token_ids) < 0 or max(r.prompt_token_ids) >= vocab:
            return "The prompt contains token ids outside the vocabulary."
        if r.adapter_id is not None and (self.lora_manager is None or r.adapter_id not in self.lora_manager):
            return "This model does not serve the requested adapter."
        return None

    def _execute(self, sched: SchedulerOutput, st: _Step) -> list[tuple[SchedulerOutput, RunnerOutput]]:
        """Run the batch; if it fails, run each sequence alone so that only the guilty ones fail."""
        try:
            return [(sched, self.runner.execute(sched))]
        except Exception:
            if len(sched.seqs) == 1:
                self._fail(sched.seqs[0].request, st)
                return []
            log.exception("engine step failed; retrying its %d sequences one by one", len(sched.seqs))
        parts = []
        for s in sched.seqs:
            one = SchedulerOutput([s], [])
            try:
                parts.append((one, self.runner.execute(one)))
            except Exception:
                self._fail(s.request, st)
        return parts

    def _prompt_logprobs(self, part: SchedulerOutput, out: RunnerOutput, st: _Step) -> None:
        """Echo: the logprob of each prompt token under the model given the tokens before it (+ top-k)."""
        for s in part.seqs:
            rows = out.prompt_rows.get(s.request.request_id)
            state = self._states.get(s.request.request_id)
            if rows is None or state is None or state.prompt_logprobs is None:
                continue
            first, n, pos = rows
            req = s.request
            lp = torch.log_softmax(out.logits[first : first + n], dim=-1)  # [n, V]
            targets = torch.tensor(req.all_token_ids[pos + 1 : pos + 1 + n], device=lp.device)
            chosen = lp.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
            k = req.params.logprobs or 0
            tv, ti = lp.topk(k, dim=-1) if k else (None, None)
            text = self.tokenizer.token_text
            known = len(state.prompt_logprobs) - (pos + 1)  # already scored before a preemption
            for j, t in enumerate(targets.tolist()):
                if j < known:
                    continue
                top = (
                    [(i, text(i), v) for i, v in zip(ti[j].tolist(), tv[j].tolist())]
                    if ti is not None and tv is not None
                    else []
                )
                state.prompt_logprobs.append(TokenLogprob(t, text(t), chosen[j], top))

    def _sample(self, part: SchedulerOutput, out: RunnerOutput, st: _Step) -> None:
        seqs = [s for s in part.seqs if s.request.request_id in out.sample_row and not s.request.status.finished]
        if not seqs:
            return

        def run(batch: list[ScheduledSeq]) -> None:
            rows = [out.sample_row[s.request.request_id] for s in batch]
            states = [self._states[s.request.request_id] for s in batch]
            srows = [
                SamplingRow(
                    s.request.params,
                    s.request.output_token_ids,
                    state.generator,
                    s.request.prompt_token_ids,
                    state.grammar,
                )
                for s, state in zip(batch, states)
            ]
            # The sampler may mask its logits in place. When every row samples, in order (a plain decode step), it
            # gets the forward's own tensor, which nothing reads after this: the copy of [64, 49k] floats was ~4% of
            # the engine's time at 64 served streams (py-spy).
            if rows == list(range(out.logits.shape[0])):
                logits = out.logits
            else:
                logits = out.logits.index_select(0, torch.tensor(rows, device=out.logits.device))
            result = self.sampler(logits, srows)
            for s, state, tok, lp in zip(batch, states, result.token_ids, result.logprobs or [None] * len(batch)):
                st.sampled[s.request.request_id] = tok
                state.logprob = lp

        try:
            run(seqs)
        except Exception:
            log.exception("sampling failed; retrying its %d rows one by one", len(seqs))
            for s in seqs:
                try:
                    run([s])
                except Exception:
                    self._fail(s.request, st)
        self._advance_grammars(seqs, st)

    def _advance_grammars(self, seqs: list[ScheduledSeq], st: _Step) -> None:
        """Each constrained row accepts its sampled token (after the whole batch sampled, so a retry never
        advances a grammar twice). A token the grammar refuses cannot come out of a masked row; if it does anyway,
        only that sequence fails."""
        for s in seqs:
            rid = s.request.request_id
            state = self._states.get(rid)
            if state is None or state.grammar is None or rid not in st.sampled:
                continue
            try:
                ok = state.grammar.accept(st.sampled[rid])
            except Exception:
                ok = False
            if not ok:
                del st.sampled[rid]
                self._fail(s.request, st)

    def _emit(self, req: Request, token: int, st: _Step) -> None:
        """The TokenEvent of one new token: its text (stop strings cut), logprob, and finish."""
        state = self._states[req.request_id]
        if state.grammar is not None and state.grammar.terminated and not req.status.finished:
            self.scheduler.finish_request(req, RequestStatus.FINISHED_STOPPED)  # complete (e.g. with ignore_eos)
        try:
            if req.status == RequestStatus.FINISHED_STOPPED:  # EOS / stop token: not shown as text
                text = state.detok.flush()
            else:
                text, stop_hit = state.detok.add([token])
                if stop_hit:
                    self.scheduler.finish_request(req, RequestStatus.FINISHED_STOPPED)
                elif req.status.finished:
                    text += state.detok.flush()
        except Exception:
            self._fail(req, st)
            return
        st.events.append(self._event(req, state, [token], text, [state.logprob] if state.logprob else None))

    def _event(
        self,
        req: Request,
        state: _SeqState,
        tokens: list[int],
        text: str,
        logprobs: list[TokenLogprob] | None,
        error: str | None = None,
    ) -> TokenEvent:
        ev = TokenEvent(
            req.request_id,
            tokens,
            text,
            logprobs,
            req.status.finished,
            req.status.finish_reason,
            req.num_prompt_tokens,
            len(req.output_token_ids),
            max(req.num_cached_tokens, 0),
            error=error,
            arrival_time=req.arrival_time,
            time=time.monotonic(),
        )
        if not state.sent_first:
            ev.prompt_logprobs, state.sent_first = state.prompt_logprobs, True
        if ev.finished and self._states.get(req.request_id) is state:
            del self._states[req.request_id]
            self.runner.release(req.request_id)
        return ev

    def _finish_event(self, req: Request, reason: FinishReason, st: _Step, error: str | None = None) -> None:
        state = self._states.get(req.request_id) or _SeqState(None, None)
        text = ""
        if reason == FinishReason.ABORT and state.detok is not None:
            try:
                text = state.detok.flush()
            except Exception:
                text = ""
        st.events.append(self._event(req, state, [], text, None, error))

    def _fail(self, req: Request, st: _Step) -> None:
        log.exception("sequence %s failed inside the engine", req.request_id)
        self.scheduler.finish_request(req, RequestStatus.FINISHED_ERROR)
        self._finish_event(req, FinishReason.ERROR, st, ERROR_MESSAGE)

    def fail_all(self) -> list[TokenEvent]:
        """Finish every request with ERROR (after an unexpected fault of the step loop itself)."""
        return self._finish_all(RequestStatus.FINISHED_ERROR, ERROR_MESSAGE)

    def abort_all(self) -> list[TokenEvent]:
        """Finish every request with ABORT (at shutdown)."""
        return self._finish_all(RequestStatus.FINISHED_ABORTED, None)

    def _finish_all(self, status: RequestStatus, error: str | None) -> list[TokenEvent]:
        st = _Step()
        self._drain_inbox(st)
        for req in list(self.scheduler.running) + list(self.scheduler.waiting):
            self.scheduler.finish_request(req, status)
            self._finish_event(req, status.finish_reason, st, error)  # type: ignore[arg-type]
        return st.events

    # --- stats -------------------------------------------------------------------------------------------

    def _update_stats(self, sched: SchedulerOutput) -> None:
        s, kv = self._stats, self.scheduler.kv
        s.waiting, s.running = self.num_waiting(), len(self.scheduler.running)
        s.kv_blocks_used = kv.num_used
        s.prefix_cache_hits, s.prefix_cache_queries = kv.stats.hits, kv.stats.queries
        s.last_step_tokens, s.last_step_seqs = sched.num_tokens, len(sched.seqs)
        s.steps += 1
        if self.lora_manager is not None:
            s.loaded_adapters = int(getattr(self.lora_manager, "num_loaded", 0) or 0)

    def stats(self) -> EngineStats:
        return dataclasses.replace(self._stats)  # a copy; read from any thread
