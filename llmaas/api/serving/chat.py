"""POST /v1/chat/completions without the framework: messages -> chat template -> n engine requests -> answer or chunks.

`prepare_chat()` validates everything and submits (errors before this point are plain HTTP errors, 429 included);
the returned `ChatRun` then either aggregates (`complete()`) or streams OpenAI chunks (`chunks()`): the role delta for
each choice first, content deltas, a final delta with `finish_reason`, and with include_usage one last chunk with
empty `choices` and `usage`. It does not know HTTP or SSE framing (sse.py does).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

from llmaas.api.deps import Call
from llmaas.api.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    TokenLogprobOut,
    TopLogprob,
)
from llmaas.api.protocol.common import Usage
from llmaas.api.serving.generation import (
    MIN_LOGPROB,
    Generation,
    GenerationRun,
    new_id,
    plan_max_tokens,
    resolve_chat_model,
)
from llmaas.engine.types import EngineRequest, TokenLogprob
from llmaas.errors import InvalidRequest

ROUTE = "/v1/chat/completions"


async def prepare_chat(
    req: ChatCompletionRequest, call: Call, *, route: str = ROUTE, request_id: str | None = None
) -> "ChatRun":
    """Validate, template, budget, admit and submit; returns once the first token (or a 4xx) is known.

    `route` and `request_id` name the call in usage records when another API is served through chat (/v1/responses).
    """
    req.check_limits(call.settings.limits)
    target = await resolve_chat_model(req.model, call, route)
    tokenizer = target.engine.tokenizer
    if not tokenizer.has_chat_template:
        raise InvalidRequest(
            f"The model `{req.model}` has no chat template; use /v1/completions with a plain prompt instead.", param="model"
        )
    # Off the event loop: a long conversation takes a while to tokenize and other requests must not wait for it.
    prompt = await asyncio.to_thread(tokenizer.apply_chat_template, req.template_messages(), True)
    max_tokens = plan_max_tokens(
        req.requested_max_tokens, len(prompt), target.engine.max_model_len, call.settings.default_max_tokens, "messages"
    )
    request_id = request_id or new_id("chatcmpl")
    requests = [
        EngineRequest(
            request_id=f"{request_id}-{i}",
            prompt_token_ids=prompt,
            params=req.to_sampling_params(
                max_tokens=max_tokens, vocab_size=tokenizer.vocab_size, logprobs=req.engine_logprobs, choice=i
            ),
            adapter_id=target.adapter_id,
            cache_salt=call.principal.project_id,  # prefix-cache blocks are shared within a tenant only
        )
        for i in range(req.n)
    ]
    gen = Generation(target, call, route, request_id, requests, [0] * req.n, [len(prompt)])
    first = await gen.start()
    return ChatRun(gen, first, req)


@dataclass
class ChatRun(GenerationRun):
    req: ChatCompletionRequest

    async def complete(self) -> ChatCompletion:
        n = self.req.n
        texts: list[list[str]] = [[] for _ in range(n)]
        logprobs: list[list[TokenLogprobOut]] = [[] for _ in range(n)]
        async for i, event in self.gen.events(self.first):
            texts[i].append(event.text)
            if event.logprobs:
                logprobs[i].extend(chat_logprobs(event.logprobs))
        choices = [
            ChatChoice(
                index=i,
                message=AssistantMessage(content="".join(texts[i])),
                logprobs=ChoiceLogprobs(content=logprobs[i]) if self.req.logprobs else None,
                finish_reason=self.gen.finish_reason(i),
            )
            for i in range(n)
        ]
        return ChatCompletion(**self.envelope(), choices=choices, usage=self.gen.usage())

    async def chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        for i in range(self.req.n):
            yield self._chunk(ChatChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content="")))
        async for i, event in self.gen.events(self.first):
            if event.text or event.logprobs:
                lp = ChoiceLogprobs(content=chat_logprobs(event.logprobs or [])) if self.req.logprobs else None
                yield self._chunk(ChatChunkChoice(index=i, delta=ChoiceDelta(content=event.text), logprobs=lp))
            if event.finished:
                yield self._chunk(ChatChunkChoice(index=i, delta=ChoiceDelta(), finish_reason=self.gen.finish_reason(i)))
        if self.req.include_usage:
            yield self._chunk(None, usage=self.gen.usage())

    def _chunk(self, choice: ChatChunkChoice | None, usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(**self.envelope(), choices=[choice] if choice is not None else [], usage=usage)


def token_bytes(text: str) -> list[int]:
    """UTF-8 bytes of a token's text; `bytes:\\xe2\\x82` (a partial character) gives back the raw bytes."""
    if text.startswith("bytes:"):
        try:
            return list(text[6:].encode("latin-1").decode("unicode_escape").encode("latin-1"))
        except (UnicodeDecodeError, UnicodeEncodeError):
            pass
    return list(text.encode("utf-8"))


def chat_logprobs(items: list[TokenLogprob]) -> list[TokenLogprobOut]:
    return [
        TokenLogprobOut(
            token=t.token,
            logprob=max(t.logprob, MIN_LOGPROB),
            bytes=token_bytes(t.token),
            top_logprobs=[
                TopLogprob(token=text, logprob=max(lp, MIN_LOGPROB), bytes=token_bytes(text)) for _, text, lp in t.top
            ],
        )
        for t in items
    ]
