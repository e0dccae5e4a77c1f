"""Engine-only decode speed: the default model's engine step at N streams, with no HTTP, client or tokenizer in the way.

    python bench/engine_step.py                       # 1, 8, 32 streams, all threads
    python bench/engine_step.py --streams 1,32 --threads 1
    python bench/engine_step.py --streams 32 --profile    # plus torch.profiler's top ops over the timed steps

Builds the engine exactly as `llmaas serve` does (default model, bf16 where the CPU has it, packed weights), prefills
N ~128-token prompts, then times every decode step (sampling at temperature 0.7, EOS ignored): step p50, the model
forward's share of it, and decode tok/s = N / step. Prints each figure against the machine's bf16 bounds measured in
the same run (bench/limits.py): at one stream the memory bound (weights read once per token), at many the compute
bound. `bench/serving.py` measures the same engine behind HTTP, with prefills interleaved and the load generator on
the same cores; the gap between the two is the cost of serving, not of the engine. Unless --no-baseline, each level
is rerun with kernels switched off, one at a time; where the weights are GGUF blocks (fp32) with dense fp32 weights
(MKL's matmul); where bf16 runs on our kernel's panels, with oneDNN's packed matmul instead; a last line times one 128-token prompt's prefill the same ways, and with SDPA over gathered K/V
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from limits import format_limits, measure  # noqa: E402

from llmaas.engine.kernels import bf16_linear, block_linear, fused, sampling  # noqa: E402


def build_engine(threads: int | None):
    from llmaas.config import Settings
    from llmaas.engine.device import pick_device, pick_dtype
    from llmaas.engine.factory import build_chat_engine
    from llmaas.engine.models.loader import load_model

    settings = Settings()
    spec = next(s for s in settings.models if s.kind == "chat")
    device = pick_device(spec)
    dtype = pick_dtype(spec, device)
    engine = build_chat_engine(spec, load_model(spec, settings), device, dtype)
    if threads and engine.core.runner.threads is not None:
        engine.core.runner.threads.fixed = True  # no re-probing mid-measurement
        torch.set_num_threads(threads)
    return engine, dtype


def run_level(core, streams: int, out_tokens: int, seed: int, profile: bool = False) -> dict:
    from llmaas.engine.types import EngineRequest, SamplingParams

    g = torch.Generator().manual_seed(seed)
    for i in range(streams):
        prompt = torch.randint(100, 40_000, (128,), generator=g).tolist()
        params = SamplingParams(max_tokens=out_tokens, temperature=0.7, ignore_eos=True)
        core.add_request(EngineRequest(f"bench-{seed}-{i}", prompt, params))
    while (
        core.scheduler.waiting
        or core._inbox
        or any(r.num_computed_tokens < r.num_prompt_tokens for r in core.scheduler.running)
    ):
        core.step()  # prefill: not timed
    model = core.runner.model
    forward = model.forward
    fwd: list[float] = []

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = forward(*args, **kwargs)
        fwd.append(time.perf_counter() - t)
        return out

    model.forward = timed
    steps: list[float] = []
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None
    try:
        if profiler is not None:
            profiler.start()
        while core.has_work():
            t = time.perf_counter()
            core.step()
            steps.append(time.perf_counter() - t)
    finally:
        del model.forward
        if profiler is not None:
            profiler.stop()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    step = statistics.median(steps)
    return {
        "streams": streams,
        "step_ms": step * 1e3,
        "forward_ms": statistics.median(fwd) * 1e3,
        "tok_s": streams / step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,8,32")
    ap.add_argument("--out-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's own choice)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of each level's timed steps")
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the same levels with the hand-written kernels off (torch ops, K/V gathered)",
    )
    args = ap.parse_args()

    engine, dtype = build_engine(args.threads)
    # Weights read per token: every projection and the LM head (the embedding table is only indexed).
    read_per_token = sum(
        m.in_features * m.out_features for m in engine.core.runner.model.modules() if isinstance(m, torch.nn.Linear)
    )
    lim = measure(read_per_token)
    print(format_limits(lim))
    bounds = lim["bounds"]["bf16" if dtype == torch.bfloat16 else "fp32"]
    model = engine.core.runner.model
    blocks = [m.blocks for m in model.modules() if getattr(m, "blocks", None) is not None]
    alternatives = []  # (label, engine): the same model with one of our weight kernels off, timed beside it
    batch1_bound = bounds["batch1_tok_s"]
    if blocks:  # the same model again with every weight dense fp32, the baseline of the block kernel
        block_bytes = sum(b.nbytes for b in blocks) + sum(
            m.weight.numel() * 4
            for m in model.modules()
            if isinstance(m, torch.nn.Linear) and getattr(m, "blocks", None) is None
        )
        batch1_bound = lim["mem_bandwidth_GBps"] * 1e9 / block_bytes  # the bytes a step really reads
        print(
            f"  {len(blocks)} projections on GGUF blocks: {block_bytes / 1e6:.0f} MB/token, batch-1 bound "
            f"{batch1_bound:.0f} tok/s"
        )
        block_linear.ENABLED = False
        try:
            alternatives.append(("dense fp32 weights", build_engine(args.threads)[0]))
        finally:
            block_linear.ENABLED = True
    if any(getattr(m, "panels", None) is not None for m in model.modules()):  # bf16 on our kernel: oneDNN beside it
        bf16_linear.ENABLED = False
        try:
            alternatives.append(("oneDNN packed bf16", build_engine(args.threads)[0]))
        finally:
            bf16_linear.ENABLED = True
    runner = engine.core.runner
    paged = runner.paged_kernel
    print(
        f"\nengine: {dtype}, {torch.get_num_threads()} thread(s), attention: "
        f"{'paged kernel (in place)' if paged else 'torch (gathered K/V)'}, fused element-wise ops: "
        f"{'on' if fused.available(dtype) else 'off'}"
    )
    print(f"{'streams':>8} {'step p50':>9} {'forward':>9} {'tok/s':>8}  fraction of bound")
    for i, n in enumerate(int(s) for s in args.streams.split(",")):
        run_level(engine.core, n, 8, seed=1000 + i)  # warm-up: kernels for this batch size
        r = run_level(engine.core, n, args.out_tokens, seed=i, profile=args.profile)
        bound, kind = (batch1_bound, "batch-1 memory") if n == 1 else (bounds["large_batch_tok_s"], "compute")
        line = (
            f"{n:>8} {r['step_ms']:>7.1f}ms {r['forward_ms']:>7.1f}ms {r['tok_s']:>8.1f}  "
            f"{r['tok_s'] / bound:.0%} of the {kind} bound ({bound:.0f} tok/s)"
        )
        if not args.no_baseline:  # the same level again, same prompts, with hand-written kernels switched off
            for label, attention, fusing, sampling_kernel in (
                ("torch path", False, False, False),
                ("no paged attention", False, True, True),
                ("no fused ops", paged, False, True),
                ("no sampling kernel", paged, True, False),
            ):
                runner.paged_kernel, fused.ENABLED, sampling.ENABLED = attention, fusing, sampling_kernel
                try:
                    run_level(engine.core, n, 8, seed=1000 + i)
                    b = run_level(engine.core, n, args.out_tokens, seed=i)
                finally:
                    runner.paged_kernel, fused.ENABLED, sampling.ENABLED = paged, True, True
                line += f"; {label} {b['step_ms']:.1f} ms ({b['step_ms'] / r['step_ms']:.2f}x)"
            for label, other in alternatives:
                run_level(other.core, n, 8, seed=1000 + i)
                b = run_level(other.core, n, args.out_tokens, seed=i)
                line += f"; {label} {b['step_ms']:.1f} ms ({b['step_ms'] / r['step_ms']:.2f}x)"
        print(line)
    if not args.no_baseline:
        print_prefill(engine.core, [(label, other.core) for label, other in alternatives])


def prefill_ms(core, seed: int, tokens: int = 128, rounds: int = 3) -> float:
    """Median time to prefill one fresh `tokens`-token prompt alone (each round a new prompt: no prefix-cache hit)."""
    from llmaas.engine.types import EngineRequest, SamplingParams

    times = []
    for r in range(rounds):
        g = torch.Generator().manual_seed(10_000 + 100 * seed + r)
        prompt = torch.randint(100, 40_000, (tokens,), generator=g).tolist()
        core.add_request(EngineRequest(f"prefill-{seed}-{r}", prompt, SamplingParams(max_tokens=1, ignore_eos=True)))
        t = time.perf_counter()
        while core.has_work():
            core.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def print_prefill(core, alternatives: list) -> None:
    """The prompt side (where the block kernel's many-row path matters most, and attention runs on the paged kernel
    or SDPA over gathered K/V): one 128-token prompt, alternated."""
    runs: dict[str, list[float]] = {}
    paged = core.runner.paged_kernel
    for i in range(3):
        runs.setdefault("as served", []).append(prefill_ms(core, 4 * i))
        if paged:
            core.runner.paged_kernel = False
            try:
                runs.setdefault("SDPA attention", []).append(prefill_ms(core, 4 * i + 3))
            finally:
                core.runner.paged_kernel = True
        for label, other in alternatives:
            runs.setdefault(label, []).append(prefill_ms(other, 4 * i + 2))
    served = statistics.median(runs["as served"])
    cells = [f"{k} {statistics.median(v):.0f} ms ({statistics.median(v) / served:.2f}x)" for k, v in runs.items()]
    print("prefill, one 128-token prompt: " + "; ".join(cells))


if __name__ == "__main__":
    main()
