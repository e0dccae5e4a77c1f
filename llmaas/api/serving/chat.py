"""POST /v1/chat/completions without the framework: messages -> chat template -> n engine requests -> answer or chunks.

`prepare_chat()` validates everything, compiles the request's constraint (response_format, tools; structured.py)
off the event loop, and submits (errors before this point are plain HTTP errors, 429 included); the returned
`ChatRun` then either aggregates (`complete()`) or streams OpenAI chunks (`chunks()`): the role delta for each choice
first, content deltas (or, with tools, a tool call's first delta with index/id/type/name and then its `arguments`
pieces), a final delta with `finish_reason`, and with include_usage one last chunk with empty `choices` and `usage`.
It does not know HTTP or SSE framing (sse.py does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

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
    FunctionDelta,
    TokenLogprobOut,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    TopLogprob,
)
from llmaas.api.protocol.common import Usage
from llmaas.api.serving.generation import (
    MIN_LOGPROB,
    Generation,
    GenerationRun,
    plan_max_tokens,
    resolve_chat_model,
)
from llmaas.api.serving.structured import (
    ArgumentsDelta,
    Constraint,
    ParsedPiece,
    ToolCallParser,
    ToolCallStart,
    ToolSpec,
    build_constraint,
    compile_constraint,
    with_tool_prompt,
)
from llmaas.engine.types import EngineRequest, TokenLogprob
from llmaas.errors import InvalidRequest
from llmaas.ids import new_id

ROUTE = "/v1/chat/completions"


async def prepare_chat(
    req: ChatCompletionRequest, call: Call, *, route: str = ROUTE, request_id: str | None = None
) -> ChatRun:
    """Validate, template, budget, admit and submit; returns once the first token (or a 4xx) is known.

    `route` and `request_id` name the call in usage records when another API is served through chat (/v1/responses).
    """
    req.check_limits(call.settings.limits)
    target = await resolve_chat_model(req.model, call, route)
    tokenizer = target.engine.tokenizer
    if not tokenizer.has_chat_template:
        raise InvalidRequest(
            f"The model `{req.model}` has no chat template; use /v1/completions with a plain prompt instead.",
            param="model",
        )
    constraint = chat_constraint(req)
    grammar = await compile_constraint(
        tokenizer, constraint, call.principal.project_id, call.settings.limits.max_grammar_compile_s
    )
    messages = with_tool_prompt(req.template_messages(), constraint)
    # Off the event loop: a long conversation takes a while to tokenize and other requests must not wait for it.
    prompt = await asyncio.to_thread(tokenizer.apply_chat_template, messages, True)
    max_tokens = plan_max_tokens(
        req.requested_max_tokens, len(prompt), target.engine.max_model_len, call.settings.default_max_tokens, "messages"
    )
    request_id = request_id or new_id("chatcmpl")
    requests = [
        EngineRequest(
            request_id=f"{request_id}-{i}",
            prompt_token_ids=prompt,
            params=req.to_sampling_params(
                max_tokens=max_tokens,
                vocab_size=tokenizer.vocab_size,
                logprobs=req.engine_logprobs,
                choice=i,
                grammar=grammar,
            ),
            adapter_id=target.adapter_id,
            cache_salt=call.principal.project_id,  # prefix-cache blocks are shared within a tenant only
            priority=call.priority,
        )
        for i in range(req.n)
    ]
    gen = Generation(target, call, route, request_id, requests, [0] * req.n, [len(prompt)])
    first = await gen.start()
    return ChatRun(gen, first, req, constraint)


def chat_constraint(req: ChatCompletionRequest) -> Constraint:
    """The constraint of a (validated) chat request: its response_format and its tools."""
    rf = req.response_format
    schema = None
    if rf is not None and rf.type == "json_schema" and rf.json_schema is not None:
        schema = rf.json_schema.schema_ if rf.json_schema.schema_ is not None else {}
    tools = [
        ToolSpec(t.function.name, t.function.description, t.function.parameters or {"type": "object", "properties": {}})
        for t in req.tools or []
    ]
    choice = req.named_tool or (req.tool_choice if isinstance(req.tool_choice, str) else None)
    return build_constraint(
        json_schema=schema,
        json_object=rf is not None and rf.type == "json_object",
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls,
        schema_param="response_format.json_schema.schema",
    )


@dataclass
class ChatRun(GenerationRun):
    req: ChatCompletionRequest
    constraint: Constraint = field(default_factory=lambda: Constraint(None, "response_format"))
    _parsers: list[ToolCallParser | None] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        names = {t.name for t in self.constraint.tools}
        self._parsers = [ToolCallParser(names) if self.constraint.parses_tools else None for _ in range(self.req.n)]

    def _pieces(self, i: int, text: str, finished: bool) -> list[ParsedPiece]:
        parser = self._parsers[i]
        if parser is None:
            return [text] if text else []
        pieces = parser.feed(text) if text else []
        return pieces + parser.finish() if finished else pieces

    def _finish_reason(self, i: int) -> str:
        parser = self._parsers[i]
        reason = self.gen.finish_reason(i)
        return "tool_calls" if parser is not None and parser.calls and reason == "stop" else reason

    async def complete(self) -> ChatCompletion:
        n = self.req.n
        texts: list[list[str]] = [[] for _ in range(n)]
        logprobs: list[list[TokenLogprobOut]] = [[] for _ in range(n)]
        async for i, event in self.gen.events(self.first):
            texts[i].extend(p for p in self._pieces(i, event.text, event.finished) if isinstance(p, str))
            if event.logprobs:
                logprobs[i].extend(chat_logprobs(event.logprobs))
        choices = [
            ChatChoice(
                index=i,
                message=self._message(i, "".join(texts[i])),
                logprobs=ChoiceLogprobs(content=logprobs[i]) if self.req.logprobs else None,
                finish_reason=self._finish_reason(i),
            )
            for i in range(n)
        ]
        return ChatCompletion(**self.envelope(), choices=choices, usage=self.gen.usage())

    def _message(self, i: int, text: str) -> AssistantMessage:
        parser = self._parsers[i]
        if parser is None or not parser.calls:
            return AssistantMessage(content=text)
        calls = [
            ToolCall(id=c["id"], function=ToolCallFunction(name=c["name"], arguments=c["arguments"]))
            for c in parser.calls
        ]
        return AssistantMessage(content=text if text.strip() else None, tool_calls=calls)

    async def chunks(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        held = [""] * self.req.n  # with tools: blank text between calls is not worth a delta of its own
        for i in range(self.req.n):
            yield self._chunk(ChatChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content="")))
        async for i, event in self.gen.events(self.first):
            lp = ChoiceLogprobs(content=chat_logprobs(event.logprobs or [])) if self.req.logprobs else None
            deltas: list[ChoiceDelta] = []
            for piece in self._pieces(i, event.text, event.finished):
                if isinstance(piece, str):
                    if self._parsers[i] is not None and not (held[i] + piece).strip():
                        held[i] += piece
                        continue
                    deltas.append(ChoiceDelta(content=held[i] + piece))
                    held[i] = ""
                elif isinstance(piece, ToolCallStart):
                    fn = FunctionDelta(name=piece.name, arguments="")
                    deltas.append(
                        ChoiceDelta(
                            tool_calls=[ToolCallDelta(index=piece.index, id=piece.id, type="function", function=fn)]
                        )
                    )
                elif isinstance(piece, ArgumentsDelta):
                    fn = FunctionDelta(arguments=piece.text)
                    deltas.append(ChoiceDelta(tool_calls=[ToolCallDelta(index=piece.index, function=fn)]))
            if event.logprobs and not deltas:
                deltas.append(ChoiceDelta(content=""))
            for k, delta in enumerate(deltas):
                yield self._chunk(ChatChunkChoice(index=i, delta=delta, logprobs=lp if k == 0 else None))
            if event.finished:
                yield self._chunk(ChatChunkChoice(index=i, delta=ChoiceDelta(), finish_reason=self._finish_reason(i)))
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
