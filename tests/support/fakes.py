"""A tiny fake engine behind `llmaas.engine.protocol`: byte tokenizer, scripted generation, fake embedder, registry.

For tests of everything above the engine (tests/api, tests/tenancy): the real app and the real engine frontend run
around it in-process, in milliseconds, with no model. Parity with a real model is the engine's tests' job, not this module's.

Behaviour the API tests steer through the prompt text: "OVERLOAD" -> Overloaded at submit, "FAIL" -> the sequence
fails inside the engine ("LATEFAIL": after 3 tokens), "SLOW" -> 50 ms between tokens (disconnect tests). Greedy
output is a fixed reply with a multi-byte character; sampled output depends only on the seed (so seed determinism
is testable).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmaas.engine.frontend import EngineFrontend
from llmaas.engine.protocol import ModelInfo
from llmaas.engine.types import EngineRequest, EngineStats, FinishReason, TokenEvent, TokenLogprob
from llmaas.errors import InvalidRequest, ModelNotFound, Overloaded

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GREEDY_REPLY = "The answer is 42 — café ✓."


class FakeTokenizer:
    """Byte-level: token id = byte + 3; ids 0..2 are specials (2 = EOS)."""

    eos_token_ids = [2]
    vocab_size = 259
    special_token_ids = frozenset({0, 1, 2})

    def __init__(self, template: bool = True) -> None:
        self.template = template

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out: list[int] = []
        i = 0
        while i < len(text):
            for sid, special in enumerate(SPECIALS):
                if text.startswith(special, i):
                    out.append(sid)
                    i += len(special)
                    break
            else:
                out.extend(b + 3 for b in text[i].encode())
                i += 1
        return out

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        raw = b"".join(
            (b"" if skip_special_tokens else SPECIALS[t].encode()) if t < 3 else bytes([t - 3]) for t in token_ids
        )
        return raw.decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        if token_id < 3:
            return SPECIALS[token_id]
        raw = bytes([token_id - 3])
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def token_bytes(self, token_id: int) -> bytes:
        return SPECIALS[token_id].encode() if token_id < 3 else bytes([token_id - 3])

    def compile_grammar(self, spec: Any, salt: str | None = None, timeout_s: float = 5.0) -> Any:
        from llmaas.engine.structured import compile_grammar  # the real compiler, over this byte vocabulary

        return compile_grammar(self, spec, salt, timeout_s)

    @property
    def has_chat_template(self) -> bool:
        return self.template

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        if not self.template:
            raise InvalidRequest("no chat template", param="model")
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text)


class FakeEngine(EngineFrontend):
    """The real frontend (one stream per call, refusals at submit, abort on close) over a scripted core: each request
    plays in a task of its own."""

    def __init__(self, model_name: str = "tiny", max_model_len: int = 256, template: bool = True) -> None:
        super().__init__(
            model_name=model_name, tokenizer=FakeTokenizer(template), max_model_len=max_model_len, max_waiting=10**6
        )
        self.submitted: list[EngineRequest] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.adapters: dict[str, Path] = {}
        self._playing: dict[str, asyncio.Task[None]] = {}

    def _accepting(self) -> bool:
        return True

    def _num_waiting(self) -> int:
        return 0

    def _submit(self, request: EngineRequest) -> None:
        if "OVERLOAD" in self.tokenizer.decode(request.prompt_token_ids):
            raise Overloaded("The server is busy; retry shortly.", retry_after=2)
        self.submitted.append(request)
        self._playing[request.request_id] = asyncio.ensure_future(self._play(request, time.monotonic()))

    def _cancel(self, request_id: str) -> None:
        task = self._playing.pop(request_id, None)
        if task is not None:
            task.cancel()
        if request_id not in self.finished and request_id not in self.aborted:
            self.aborted.append(request_id)

    async def _play(self, request: EngineRequest, arrival: float) -> None:
        async for event in self._script(request, arrival):
            self._dispatch([event])
        self._playing.pop(request.request_id, None)

    def _reply(self, request: EngineRequest) -> list[int]:
        p = request.params
        if p.greedy or p.seed is None and p.temperature <= 0:
            return self.tokenizer.encode(GREEDY_REPLY) + [2]
        rng = random.Random(p.seed if p.seed is not None else random.random())
        words = ["alpha", "beta", "gamma", "delta", "ß", "😀", "stop", "here"]
        return self.tokenizer.encode(" ".join(rng.choice(words) for _ in range(40)))

    async def _script(self, request: EngineRequest, arrival: float) -> AsyncIterator[TokenEvent]:
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        slow = "SLOW" in prompt
        p = request.params
        reply = self._reply(request)
        text_bytes = b""
        sent_text = ""
        for sent, tok in enumerate(reply):  # sent: tokens sent before this one
            if slow:
                await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(0)
            if "FAIL" in prompt and (sent >= 3 or "LATEFAIL" not in prompt):
                yield TokenEvent(
                    request.request_id,
                    [],
                    "",
                    finished=True,
                    finish_reason=FinishReason.ERROR,
                    error="boom (client-safe)",
                    num_output_tokens=sent,
                )
                return
            out = sent + 1
            lp = None
            if p.logprobs is not None:
                top = [
                    (t, self.tokenizer.token_text(t), -0.1 * (k + 1)) for k, t in enumerate(range(70, 70 + p.logprobs))
                ]
                lp = [TokenLogprob(tok, self.tokenizer.token_text(tok), -0.05, top)]
            eos = tok in self.tokenizer.eos_token_ids and not p.ignore_eos
            if not eos:
                text_bytes += bytes([tok - 3])
            full = text_bytes[: _complete_len(text_bytes)].decode()  # never half a character
            stop_hit = next((s for s in p.stop if s in full), None)
            if stop_hit is not None:
                full = full[: full.index(stop_hit)]
            done = eos or stop_hit is not None or out >= p.max_tokens
            hold = 0 if done or not p.stop else max(len(s) for s in p.stop) - 1  # a stop may be starting
            visible = full[: max(len(sent_text), len(full) - hold)]
            new_text = visible[len(sent_text) :]
            sent_text = visible
            reason = None
            if done:
                reason = (
                    FinishReason.LENGTH if (out >= p.max_tokens and not eos and stop_hit is None) else FinishReason.STOP
                )
            prompt_lps = None
            if sent == 0 and request.echo_prompt_logprobs:
                prompt_lps = [None] + [
                    TokenLogprob(t, self.tokenizer.token_text(t), -1.0, []) for t in request.prompt_token_ids[1:]
                ]
            if done:
                self.finished.append(request.request_id)
            yield TokenEvent(
                request.request_id,
                [tok],
                new_text,
                logprobs=lp,
                finished=done,
                finish_reason=reason,
                num_prompt_tokens=len(request.prompt_token_ids),
                num_output_tokens=out,
                num_cached_tokens=0,
                prompt_logprobs=prompt_lps,
                arrival_time=arrival,
                time=time.monotonic(),
            )
            if done:
                return
        self.finished.append(request.request_id)

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        self.adapters[adapter_id] = path

    def stats(self) -> EngineStats:
        return EngineStats()

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _complete_len(b: bytes) -> int:
    """Length of the longest prefix of b that is complete UTF-8."""
    for cut in range(len(b), max(len(b) - 4, -1), -1):
        try:
            b[:cut].decode()
            return cut
        except UnicodeDecodeError:
            continue
    return 0


class FakeEmbedder:
    model_name = "emb"
    max_model_len = 64
    dimensions = 8

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer(template=False)

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
        vectors, tokens = [], 0
        for x in inputs:
            ids = self.tokenizer.encode(x) if isinstance(x, str) else x
            tokens += len(ids)
            v = [float(sum(ids) % (k + 3)) + 1.0 for k in range(self.dimensions)]
            norm = math.sqrt(sum(a * a for a in v))
            vectors.append([a / norm for a in v])
        return vectors, tokens


class FakeRegistry:
    """Implements `llmaas.engine.protocol.Models` over the fakes above."""

    created = 1_700_000_000

    def __init__(self) -> None:
        self.engines = {"tiny": FakeEngine(), "notemplate": FakeEngine("notemplate", template=False)}
        self.embedders = {"emb": FakeEmbedder()}
        self.started = self.stopped = False

    def chat(self, name: str) -> FakeEngine:
        if name not in self.engines:
            raise ModelNotFound(f"no model {name}")
        return self.engines[name]

    def embedder(self, name: str) -> FakeEmbedder:
        if name not in self.embedders:
            raise ModelNotFound(f"no model {name}")
        return self.embedders[name]

    def list(self) -> list[ModelInfo]:
        return [ModelInfo(n, "chat", e.max_model_len, self.created) for n, e in self.engines.items()] + [
            ModelInfo(n, "embedding", e.max_model_len, self.created) for n, e in self.embedders.items()
        ]

    def stats(self) -> dict[str, EngineStats]:
        return {n: e.stats() for n, e in self.engines.items()}

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True


@dataclass
class FineTuned:
    id: str
    base_model: str
    adapter_id: str
    adapter_path: str
    created: int = 1_700_000_100
    owned_by: str = "proj-a"


class FakeFinetuned:
    """training's lookup/list: one fine-tuned model owned by project `proj-a`."""

    def __init__(self) -> None:
        self.model = FineTuned("ft:tiny:proj-a:mine:ftjob-1", "tiny", "adapter-1", "/srv/adapters/adapter-1")

    async def lookup(self, model: str, principal: Any) -> FineTuned | None:
        return self.model if model == self.model.id and principal.project_id == "proj-a" else None

    async def list(self, principal: Any) -> list[FineTuned]:
        return [self.model] if principal.project_id == "proj-a" else []
