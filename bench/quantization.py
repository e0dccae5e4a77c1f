"""Weight-only int8 against the default dtype, same run: greedy agreement on 20 prompts and decode speed.

    python bench/quantization.py                  # 20 prompts x 64 greedy tokens; decode at 1, 4, 8 streams
    python bench/quantization.py --streams 1 --threads 1

Builds the default chat model twice, as `llmaas serve` does (dtype auto, packed weights) and with
`quantization: int8`, then prints (1) greedy agreement: how many of the 20 completions are identical, and the mean
share of each completion generated before the two first differ; (2) the engine's decode step at N streams for both
(bench/engine_step.py's loop), with the ratio, against the memory bound of each weight format measured in the same
run (int8 reads half the bytes of bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_step import run_level  # noqa: E402
from limits import format_limits, measure  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three prime numbers greater than 50.",
    "Translate 'good morning' into Spanish.",
    "What does HTTP stand for?",
    "Give me a synonym for 'happy'.",
    "How many legs does a spider have?",
    "Summarize the plot of Romeo and Juliet.",
    "What is 17 times 23?",
    "Name a famous painting by Van Gogh.",
    "Why is the sky blue?",
    "Write a Python function that reverses a string.",
    "What is the boiling point of water?",
    "Suggest a name for a pet turtle.",
    "What is machine learning?",
    "Describe a cat in one sentence.",
    "Who wrote 'Pride and Prejudice'?",
    "What are the three states of matter?",
    "Tell me a fun fact about octopuses.",
]


def build(quantization: str, threads: int | None, dtype_name: str | None = None):
    from llmaas.config import Settings
    from llmaas.engine.device import pick_device, pick_dtype
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model

    settings = Settings()
    spec = next(s for s in settings.models if s.kind == "chat")
    spec = spec.model_copy(update={"quantization": quantization, "dtype": dtype_name or spec.dtype})
    device = pick_device(spec)
    dtype = pick_dtype(spec, device)
    loaded = load_model(spec, settings)
    return build_core(spec, loaded, device, dtype, num_threads=threads), loaded.tokenizer, dtype


def greedy(core, tokenizer, max_tokens: int) -> list[list[int]]:
    from llmaas.engine.types import EngineRequest, SamplingParams

    for i, p in enumerate(PROMPTS):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": p}])
        core.add_request(
            EngineRequest(f"q{i}", ids, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
        )
    out: dict[str, list[int]] = {}
    while core.has_work():
        for ev in core.step():
            out.setdefault(ev.request_id, []).extend(ev.token_ids)
    return [out[f"q{i}"] for i in range(len(PROMPTS))]


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[int, float]:
    def prefix(x: list[int], y: list[int]) -> int:
        return next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))

    return sum(x == y for x, y in zip(a, b)), statistics.mean(prefix(x, y) / len(x) for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt")
    ap.add_argument("--out-tokens", type=int, default=96, help="decode steps timed per level")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    base, tokenizer, dtype = build("none", args.threads)
    int8, _, _ = build("int8", args.threads)
    read = sum(m.in_features * m.out_features for m in base.runner.model.modules() if isinstance(m, torch.nn.Linear))
    lim = measure(read)
    print(format_limits(lim))
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    reference = greedy(base, tokenizer, args.tokens)
    print(
        f"\ngreedy agreement ({len(PROMPTS)} prompts x {args.tokens} tokens): completions identical, and the mean "
        "share of a completion generated before the two first differ"
    )
    same, share = agreement(reference, greedy(int8, tokenizer, args.tokens))
    print(f"  int8 vs {name}: {same}/{len(PROMPTS)} identical, {share:.0%}")
    if dtype == torch.bfloat16:  # for scale: what serving in bf16 instead of fp32 moves
        fp32, _, _ = build("none", args.threads, "float32")
        same, share = agreement(greedy(fp32, tokenizer, args.tokens), reference)
        print(f"  bf16 vs fp32: {same}/{len(PROMPTS)} identical, {share:.0%}")
        del fp32
    if any(getattr(m, "blocks", None) is not None for m in base.runner.model.modules()):
        from llmaas.engine.kernels import block_linear

        block_linear.ENABLED = False  # the same fp32 weights, dense, on MKL: what the block kernel changes
        try:
            dense, _, _ = build("none", args.threads)
        finally:
            block_linear.ENABLED = True
        same, share = agreement(reference, greedy(dense, tokenizer, args.tokens))
        print(f"  fp32 on GGUF blocks vs dense fp32: {same}/{len(PROMPTS)} identical, {share:.0%}")
        del dense
    bound = {k: lim["bounds"][k]["batch1_tok_s"] for k in (name, "int8")}
    print(
        f"\ndecode step, {torch.get_num_threads()} thread(s); batch-1 memory bounds {name} {bound[name]:.0f} tok/s, "
        f"int8 {bound['int8']:.0f} tok/s"
    )
    print(f"{'streams':>8} {name + ' step':>10} {'int8 step':>10}  int8 speed-up   int8 at 1 stream vs its bound")
    for i, n in enumerate(int(s) for s in args.streams.split(",")):
        r = {}
        for label, core in ((name, base), ("int8", int8)):
            run_level(core, n, 8, seed=1000 + i)
            r[label] = run_level(core, n, args.out_tokens, seed=i)
        a, b = r[name]["step_ms"], r["int8"]["step_ms"]
        line = f"{n:>8} {a:>8.1f}ms {b:>8.1f}ms  {a / b:>12.2f}x"
        if n == 1:
            line += f"   {r['int8']['tok_s'] / bound['int8']:.0%} ({r['int8']['tok_s']:.0f} tok/s)"
        print(line)


if __name__ == "__main__":
    main()
