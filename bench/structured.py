"""The cost of constrained decoding: engine decode throughput at N streams where half carry a JSON schema, against
the same N streams with none, in one run (the issue's target: within 10%).

    python bench/structured.py                    # 32 streams, 64 decode steps, 2 rounds per mode
    python bench/structured.py --streams 32 --rounds 3 --threads 1

Builds the default model's engine as `llmaas serve` does (bench/engine_step.py), compiles the schema once (as the
API does, off the step loop), prefills N ~128-token prompts, then times every decode step (temperature 0.7, EOS
ignored). The schema needs at least 64 array items, so constrained streams run exactly as long as free ones and the
batch stays N wide. Modes alternate (free, half, free, half, ...) so drift of a shared machine hits both alike.
Prints decode tok/s per mode, the ratio, and the grammar's own cost per step: filling + applying the batch's masks
(structured.apply_masks) and advancing the matchers (GrammarState.accept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_step import build_engine  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "values": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 64}
    },
    "required": ["values"],
    "additionalProperties": False,
}


class Timer:
    """Wraps a function and sums the time spent in it."""

    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name, self.orig, self.total = owner, name, getattr(owner, name), 0.0

        def timed(*a: object, **k: object) -> object:
            t = time.perf_counter()
            try:
                return self.orig(*a, **k)
            finally:
                self.total += time.perf_counter() - t

        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.orig)


def run(core, streams: int, constrained: int, grammar, steps: int, seed: int) -> dict:
    from llmaas.engine import sampler, structured
    from llmaas.engine.types import EngineRequest, SamplingParams

    g = torch.Generator().manual_seed(seed)
    for i in range(streams):
        prompt = torch.randint(100, 40_000, (128,), generator=g).tolist()
        params = SamplingParams(
            max_tokens=steps + 1, temperature=0.7, ignore_eos=True, grammar=grammar if i < constrained else None
        )
        core.add_request(EngineRequest(f"bench-{seed}-{i}", prompt, params))
    while (
        core.scheduler.waiting
        or core._inbox
        or any(r.num_computed_tokens < r.num_prompt_tokens for r in core.scheduler.running)
    ):
        core.step()  # prefill: not timed
    masks = Timer(sampler.structured, "apply_masks")
    accept = Timer(structured.GrammarState, "accept")
    times: list[float] = []
    tokens = 0
    try:
        while core.has_work():
            t = time.perf_counter()
            events = core.step()
            times.append(time.perf_counter() - t)
            tokens += sum(len(e.token_ids) for e in events)
    finally:
        masks.restore()
        accept.restore()
    n = len(times)
    return {
        "step_ms": statistics.median(times) * 1e3,
        "tok_s": tokens / sum(times),
        "mask_ms": masks.total / n * 1e3,
        "accept_ms": accept.total / n * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's own choice)")
    args = ap.parse_args()

    from llmaas.engine.types import GrammarSpec

    engine, dtype = build_engine(args.threads)
    t = time.perf_counter()
    grammar = engine.tokenizer.compile_grammar(GrammarSpec("json_schema", json.dumps(SCHEMA)), timeout_s=60)
    print(
        f"engine: {dtype}, {torch.get_num_threads()} thread(s); schema compiled in {(time.perf_counter() - t) * 1e3:.0f} ms "
        f"(vocabulary {engine.tokenizer.vocab_size}, tokenizer info included)"
    )
    half = args.streams // 2
    run(engine.core, args.streams, half, grammar, 4, seed=999)  # warm-up: kernels, matcher allocation
    results: dict[str, list[dict]] = {"free": [], "half": []}
    for r in range(args.rounds):
        for mode, k in (("free", 0), ("half", half)):
            res = run(engine.core, args.streams, k, grammar, args.steps, seed=r)
            results[mode].append(res)
            print(
                f"round {r} {mode:>4}: {res['tok_s']:7.1f} tok/s, step p50 {res['step_ms']:6.1f} ms, "
                f"masks {res['mask_ms']:.2f} ms/step, accept {res['accept_ms']:.2f} ms/step"
            )
    free = statistics.median(x["tok_s"] for x in results["free"])
    constrained = statistics.median(x["tok_s"] for x in results["half"])
    mask = statistics.median(x["mask_ms"] for x in results["half"])
    acc = statistics.median(x["accept_ms"] for x in results["half"])
    print(
        f"\n{args.streams} streams, {half} with a JSON schema: {constrained:.1f} tok/s vs {free:.1f} tok/s unconstrained "
        f"= ratio {constrained / free:.3f} (target >= 0.90); grammar cost {mask + acc:.2f} ms/step "
        f"({mask:.2f} masks for {half} rows + {acc:.2f} accept)"
    )


if __name__ == "__main__":
    main()
