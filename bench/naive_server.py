"""The naive baseline: transformers `generate` per request behind a tiny FastAPI app, one request at a time.

This is the simplest OpenAI-ish chat server one would write: no batching, no paged cache, a lock around `generate`.
It serves only streaming/non-streaming /v1/chat/completions (greedy or sampled) plus /health, for the benchmark.
Extension: `ignore_eos: true` keeps generating to max_tokens. Not hardened; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


def native_bf16() -> bool:
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return "avx512_bf16" in flags or "amx_bf16" in flags


class QueueStreamer(BaseStreamer):
    """Hands each new token id from the generate thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue, self.first = loop, queue, True

    def put(self, value):
        if self.first:  # generate() first pushes the prompt
            self.first = False
            return
        for t in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, t)

    def end(self):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return self.event.is_set()


def build_app(model_dir: str) -> FastAPI:
    dtype = torch.bfloat16 if native_bf16() else torch.float32
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    lock = asyncio.Lock()
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        ids = tok.apply_chat_template(
            body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        max_tokens = int(body.get("max_tokens") or 256)
        temperature = float(body.get("temperature", 1.0))
        kwargs = {"max_new_tokens": max_tokens, "do_sample": temperature > 0, "pad_token_id": tok.eos_token_id}
        if temperature > 0:
            kwargs["temperature"] = temperature
        if body.get("ignore_eos"):
            kwargs["min_new_tokens"] = max_tokens
        rid, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.get("model", "naive")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def run():
            with torch.inference_mode():
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=QueueStreamer(loop, queue),
                    stopping_criteria=StoppingCriteriaList([Cancelled(cancel)]),
                    **kwargs,
                )

        async def tokens():
            async with lock:
                thread = threading.Thread(target=run, daemon=True)
                thread.start()
                try:
                    while (t := await queue.get()) is not None:
                        yield t
                finally:
                    cancel.set()  # client gone or done: stop generate, then release the lock
                    await asyncio.to_thread(thread.join)

        def chunk(delta: dict, finish=None, usage=None) -> str:
            c = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                c["usage"] = usage
            return f"data: {json.dumps(c)}\n\n"

        if not body.get("stream"):
            out = [t async for t in tokens()]
            text = tok.decode(out, skip_special_tokens=True)
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length" if len(out) >= max_tokens else "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": ids.shape[1],
                        "completion_tokens": len(out),
                        "total_tokens": ids.shape[1] + len(out),
                    },
                }
            )

        async def sse():
            out, sent = [], ""
            yield chunk({"role": "assistant", "content": ""})
            async for t in tokens():
                out.append(t)
                text = tok.decode(out, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # incomplete UTF-8 sequence: wait for the next token
                    continue
                yield chunk({"content": text[len(sent) :]})
                sent = text
            finish = "length" if len(out) >= max_tokens else "stop"
            yield chunk(
                {},
                finish,
                {"prompt_tokens": ids.shape[1], "completion_tokens": len(out), "total_tokens": ids.shape[1] + len(out)},
            )
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="HF folder (bench/convert.py builds one)")
    p.add_argument("--port", type=int, default=8010)
    a = p.parse_args()
    uvicorn.run(build_app(a.model), host="127.0.0.1", port=a.port, log_level="warning")
