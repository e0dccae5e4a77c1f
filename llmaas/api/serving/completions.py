"""POST /v1/completions without the framework: prompts -> tokens -> prompts × n engine requests -> answer or chunks.

Choice index = prompt index × n + j, as OpenAI numbers them. `echo` puts the prompt in front of each choice's text
(the first chunk carries it when streaming); with `logprobs` the prompt tokens are scored too (first one: null).
Logprobs use OpenAI's legacy shape. It does not know HTTP or SSE framing (sse.py does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llmaas.api.deps import Call
from llmaas.api.protocol.common import Usage
from llmaas.api.protocol.completions import Completion, CompletionChoice, CompletionRequest, LegacyLogprobs
from llmaas.api.serving.generation import (
    MIN_LOGPROB,
    Generation,
    GenerationRun,
    check_token_ids,
    plan_max_tokens,
    resolve_chat_model,
)
from llmaas.engine.protocol import Tokenizer
from llmaas.engine.types import EngineRequest, TokenEvent, TokenLogprob
from llmaas.errors import InvalidRequest
from llmaas.ids import new_id

ROUTE = "/v1/completions"


async def prepare_completion(req: CompletionRequest, call: Call) -> CompletionRun:
    """Validate, tokenize, budget, admit and submit; returns once the first token (or a 4xx) is known."""
    req.check_limits(call.settings.limits)
    target = await resolve_chat_model(req.model, call, ROUTE)
    tokenizer = target.engine.tokenizer
    prompts: list[list[int]] = []
    texts: list[str] = []
    many = len(req.prompts()) > 1
    for p, raw in enumerate(req.prompts()):
        param = f"prompt[{p}]" if many else "prompt"
        if isinstance(raw, str):
            ids = await asyncio.to_thread(tokenizer.encode, raw, True)  # off the event loop
            texts.append(raw)
        else:
            check_token_ids(raw, tokenizer.vocab_size, param)
            ids = raw
            texts.append(tokenizer.decode(raw, skip_special_tokens=False))
        # The one emptiness check, on what the model would see; an empty string is empty even where the tokenizer
        # adds a BOS, unless echo asks for the (empty) prompt back with the completion.
        if not ids or (raw == "" and not req.echo):
            raise InvalidRequest("The prompt is empty.", param=param)
        prompts.append(ids)
    budgets = [
        plan_max_tokens(
            req.max_tokens, len(ids), target.engine.max_model_len, call.settings.default_max_tokens, "prompt"
        )
        for ids in prompts
    ]
    request_id = new_id("cmpl")
    requests: list[EngineRequest] = []
    prompt_index: list[int] = []
    for p, ids in enumerate(prompts):
        for j in range(req.n):
            requests.append(
                EngineRequest(
                    request_id=f"{request_id}-{p * req.n + j}",
                    prompt_token_ids=ids,
                    params=req.to_sampling_params(
                        max_tokens=budgets[p], vocab_size=tokenizer.vocab_size, logprobs=req.logprobs, choice=j
                    ),
                    adapter_id=target.adapter_id,
                    cache_salt=call.principal.project_id,
                    echo_prompt_logprobs=req.echo and req.logprobs is not None,
                    priority=call.priority,
                )
            )
            prompt_index.append(p)
    gen = Generation(target, call, ROUTE, request_id, requests, prompt_index, [len(ids) for ids in prompts])
    first = await gen.start()
    return CompletionRun(gen, first, req, tokenizer, prompts, texts)


@dataclass
class CompletionRun(GenerationRun):
    req: CompletionRequest
    tokenizer: Tokenizer
    prompts: list[list[int]]
    prompt_texts: list[str]
    _offsets: dict[int, int] = field(default_factory=dict)  # choice -> text offset so far (legacy logprobs)
    _echoed: set[int] = field(default_factory=set)  # choices whose echoed prompt was already sent

    async def complete(self) -> Completion:
        count = len(self.gen.requests)
        texts: list[list[str]] = [[] for _ in range(count)]
        lps: list[LegacyLogprobs] = [LegacyLogprobs() for _ in range(count)]
        async for i, event in self.gen.events(self.first):
            text, lp = self._piece(i, event)
            texts[i].append(text)
            if lp is not None:
                _extend(lps[i], lp)
        choices = [
            CompletionChoice(
                index=i,
                text="".join(texts[i]),
                logprobs=lps[i] if self.req.logprobs is not None else None,
                finish_reason=self.gen.finish_reason(i),
            )
            for i in range(count)
        ]
        return self._chunk(choices, usage=self.gen.usage())

    async def chunks(self) -> AsyncIterator[Completion]:
        async for i, event in self.gen.events(self.first):
            text, lp = self._piece(i, event)
            if text or lp is not None or event.finished:
                choice = CompletionChoice(
                    index=i, text=text, logprobs=lp, finish_reason=self.gen.finish_reason(i) if event.finished else None
                )
                yield self._chunk([choice])
        if self.req.include_usage:
            yield self._chunk([], usage=self.gen.usage())

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        """A whole completion or one streamed chunk: OpenAI gives both the same shape."""
        return Completion(**self.envelope(), choices=choices, usage=usage)

    def _piece(self, i: int, event: TokenEvent) -> tuple[str, LegacyLogprobs | None]:
        """This event's text for choice i (with the echoed prompt in front the first time) and its logprobs."""
        want_lp = self.req.logprobs is not None
        lp = LegacyLogprobs() if want_lp else None
        text = ""
        if self.req.echo and i not in self._echoed:
            self._echoed.add(i)
            p = self.gen.prompt_index[i]
            text = self.prompt_texts[p]
            if lp is not None:
                self._add_prompt_logprobs(i, lp, self.prompts[p], event.prompt_logprobs)
        text += event.text
        if lp is not None:
            for t in event.logprobs or []:
                self._add(i, lp, t.token, t.logprob, {txt: v for _, txt, v in t.top})
        return text, lp

    def _add_prompt_logprobs(
        self, i: int, lp: LegacyLogprobs, ids: list[int], scored: list[TokenLogprob | None] | None
    ) -> None:
        for k, token_id in enumerate(ids):
            item = scored[k] if scored is not None and k < len(scored) else None
            if item is None:
                self._add(i, lp, self.tokenizer.token_text(token_id), None, None)
            else:
                self._add(i, lp, item.token, item.logprob, {txt: v for _, txt, v in item.top})

    def _add(self, i: int, lp: LegacyLogprobs, token: str, logprob: float | None, top: dict[str, float] | None) -> None:
        offset = self._offsets.get(i, 0)
        lp.tokens.append(token)
        lp.token_logprobs.append(None if logprob is None else max(logprob, MIN_LOGPROB))
        lp.top_logprobs.append(None if top is None else {k: max(v, MIN_LOGPROB) for k, v in top.items()})
        lp.text_offset.append(offset)
        self._offsets[i] = offset + len(token)


def _extend(into: LegacyLogprobs, more: LegacyLogprobs) -> None:
    into.tokens += more.tokens
    into.token_logprobs += more.token_logprobs
    into.top_logprobs += more.top_logprobs
    into.text_offset += more.text_offset
