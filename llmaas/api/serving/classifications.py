"""POST /v1/classifications (extension), framework-free: label probabilities from the model's own likelihoods.

For each text, the conversation [user: text] is templated with the generation prompt, and each label (+ the
end-of-turn token, so "pos" and "positive" differ) is appended as the assistant's answer. One engine request per
(text, label) with `echo_prompt_logprobs` and max_tokens=1 scores the label's tokens; the softmax of the summed
log-probabilities over the labels is the answer. Same engine, same adapters as chat: no second model copy.
Fine-tune on `{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]}`.
"""

from __future__ import annotations

import math

from llmaas.api.deps import Call
from llmaas.api.protocol.classifications import Classification, ClassificationRequest, ClassificationResponse
from llmaas.api.protocol.common import Usage
from llmaas.api.serving.generation import Generation, resolve_chat_model
from llmaas.engine.types import EngineRequest, SamplingParams
from llmaas.errors import ContextLengthExceeded, EngineError
from llmaas.ids import new_id

ROUTE = "/v1/classifications"


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


async def classify(req: ClassificationRequest, call: Call) -> ClassificationResponse:
    req.check_limits(call.settings.limits)
    target = await resolve_chat_model(req.model, call, ROUTE)
    tok = target.engine.tokenizer
    end = tok.eos_token_ids[:1]
    answers = [tok.encode(label) + end for label in req.labels]
    request_id = new_id("clf")
    requests: list[EngineRequest] = []
    spans: list[tuple[int, int]] = []  # per request: the label's token positions in its prompt
    for i, text in enumerate(req.inputs):
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        for j, answer in enumerate(answers):
            ids = prompt + answer
            if len(ids) >= target.engine.max_model_len:
                raise ContextLengthExceeded(
                    f"Input {i} with label {j} needs {len(ids)} tokens; this model's maximum context length is "
                    f"{target.engine.max_model_len}.",
                    param="input",
                )
            spans.append((len(prompt), len(ids)))
            requests.append(
                EngineRequest(
                    request_id=f"{request_id}-{len(requests)}",
                    prompt_token_ids=ids,
                    params=SamplingParams(max_tokens=1, temperature=0.0),
                    adapter_id=target.adapter_id,
                    cache_salt=call.principal.project_id,
                    echo_prompt_logprobs=True,
                )
            )
    n = len(requests)
    gen = Generation(
        target, call, ROUTE, request_id, requests, list(range(n)), [len(r.prompt_token_ids) for r in requests]
    )
    scores: list[float | None] = [None] * n
    async for k, event in gen.events(await gen.start()):
        if event.prompt_logprobs is not None and scores[k] is None:
            start, stop = spans[k]
            scored = event.prompt_logprobs[start:stop]
            if len(scored) != stop - start or any(p is None for p in scored):
                raise EngineError("The model did not score the prompt.")
            scores[k] = sum(p.logprob for p in scored if p is not None)
    if any(s is None for s in scores):
        raise EngineError("The model did not score the prompt.")
    data = []
    width = len(req.labels)
    for i in range(len(req.inputs)):
        probs = softmax([float(s) for s in scores[i * width : (i + 1) * width]])  # type: ignore[arg-type]
        best = max(range(width), key=lambda j: probs[j])
        data.append(
            Classification(
                index=i, label=req.labels[best], scores={label: round(p, 6) for label, p in zip(req.labels, probs)}
            )
        )
    usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=0, total_tokens=gen.prompt_tokens)
    return ClassificationResponse(model=req.model, data=data, usage=usage)
