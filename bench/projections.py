"""One decode step's projections, kernel against kernel: SmolLM2-135M's 121 matmuls (30 layers of q/k/v fused, o,
gate/up fused, down, plus the LM head), each with its own random weight so that every step streams all of them from
memory as a served step does, at each row count.

    python bench/projections.py                       # 1, 4, 8, 16, 32, 64, 128, 256, 512 rows
    python bench/projections.py --rows 1,64 --rounds 9

Where the CPU computes bf16 (the engine serves bf16 there), the paths are: our kernel as the engine runs it
(kernels/bf16_linear: AMX tiles where the CPU has them, AVX-512 BF16 dot products elsewhere), the same kernel built
without AMX (only where the CPU has it: what the tiles win), and oneDNN's packed matmul (torch's mkldnn linear; what
the engine used before, and still uses for shapes the panels do not fit). Elsewhere (fp32 on the GGUF's blocks:
Q4_1 layers, a Q8_0 LM head, as the default model ships): our block kernel (kernels/block_linear) and MKL's sgemm
(torch) on the same weights dequantized to fp32; numpy's OpenBLAS is left out, as its threads spin after each call
and slow whichever path runs next. Interleaved round by round, best of --rounds each. Prints ms per step, GFLOP/s, each path against ours, and the machine's memory bound for reading the weights
once (bench/limits.py's copy bandwidth, same run).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from limits import memory_bandwidth  # noqa: E402

from llmaas.engine import kernels  # noqa: E402
from llmaas.engine.kernels import bf16_linear, block_linear  # noqa: E402

LAYERS, DIM, INTER, QKV, VOCAB = 30, 576, 1536, 960, 49152  # SmolLM2-135M
SHAPES = [(QKV, DIM), (DIM, DIM), (2 * INTER, DIM), (DIM, INTER)] * LAYERS + [(VOCAB, DIM)]  # [out, in]


def _typed(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.llmaas_bf16_linear.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3
    return lib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,4,8,16,32,64,128,256,512")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    rows = [int(r) for r in a.rows.split(",")]
    if bf16_linear.available():
        paths, weight_bytes, kernel = bf16_paths()
    elif block_linear.available():
        paths, weight_bytes, kernel = block_paths()
    else:
        raise SystemExit("neither of our projection kernels runs here (no C++ compiler, or no AVX2)")
    bandwidth = memory_bandwidth()
    print(f"kernel: {kernel}, {torch.get_num_threads()} threads")
    print(
        f"weights {weight_bytes / 1e6:.0f} MB per step; copy bandwidth {bandwidth / 1e9:.1f} GB/s, so a step reads them"
    )
    print(f"in >= {weight_bytes / bandwidth * 1e3:.1f} ms\n")
    names = list(paths)
    flops_per_row = 2 * sum(n * k for n, k in SHAPES)
    for m in rows:
        best = {name: float("inf") for name in names}
        for name in names:
            paths[name](m)  # warm-up
        for _ in range(a.rounds):
            for name in names:
                best[name] = min(best[name], paths[name](m))
        flops = flops_per_row * m
        cells = [f"{name} {best[name] * 1e3:7.2f} ms ({flops / best[name] / 1e9:5.0f} GFLOP/s)" for name in names]
        ratios = ", ".join(f"{name} {best[name] / best['ours']:.2f}x" for name in names[1:])
        print(f"{m:4d} rows: " + "  ".join(cells) + f"  | as slow as ours: {ratios}", flush=True)


def bf16_paths() -> tuple[dict[str, Callable[[int], float]], int, str]:
    ours = _typed(bf16_linear._lib())
    kernels_by_name = {"ours": ours}
    if bf16_linear.amx():
        no_amx = kernels.load("bf16_linear", ("-mno-amx-tile", "-mno-amx-bf16", "-mno-amx-int8"))
        if no_amx is not None:
            kernels_by_name["dot products (no AMX)"] = _typed(no_amx)
    weights = [torch.randn(n, k).bfloat16() * 0.05 for n, k in SHAPES]
    panels = [bf16_linear.pack(w) for w in weights]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    del weights

    def kernel_step(lib: ctypes.CDLL) -> Callable[[int], float]:
        def step(rows: int) -> float:
            xs = {k: torch.randn(rows, k).bfloat16() for k in (DIM, INTER)}
            ys = {n: torch.empty(rows, n, dtype=torch.bfloat16) for n, _ in SHAPES}
            t0 = time.perf_counter()
            for (n, k), panel in zip(SHAPES, panels, strict=True):
                lib.llmaas_bf16_linear(xs[k].data_ptr(), panel.data_ptr(), ys[n].data_ptr(), rows, k, n)
            return time.perf_counter() - t0

        return step

    def onednn_step(rows: int) -> float:
        xs = {k: torch.randn(rows, k).bfloat16() for k in (DIM, INTER)}
        t0 = time.perf_counter()
        for (_, k), packed in zip(SHAPES, onednn, strict=True):
            torch.ops.mkldnn._linear_pointwise(xs[k], packed, None, "none", [None], "")
        return time.perf_counter() - t0

    paths = {name: kernel_step(lib) for name, lib in kernels_by_name.items()} | {"oneDNN": onednn_step}
    kind = "AMX tiles" if bf16_linear.amx() else "AVX-512 BF16 dot products"
    return paths, sum(n * k * 2 for n, k in SHAPES), kind


def block_paths() -> tuple[dict[str, Callable[[int], float]], int, str]:
    g = torch.Generator().manual_seed(0)

    def blocks(n: int, k: int, lm_head: bool) -> block_linear.Blocks:
        d = (torch.rand(n, k // block_linear.GROUP, generator=g) * 0.01).half().float()
        if lm_head:  # Q8_0, as SmolLM2's GGUF stores its tied embedding
            q = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
            return block_linear.Blocks(q, d, None, (n, k))
        q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
        return block_linear.Blocks(q, d, (d * -8).half().float(), (n, k))

    weights = [blocks(n, k, i == len(SHAPES) - 1) for i, (n, k) in enumerate(SHAPES)]
    dense = [block_linear.dequantize(w) for w in weights]

    def inputs(rows: int) -> dict[int, torch.Tensor]:
        return {k: torch.randn(rows, k) for k in (DIM, INTER)}

    def ours(rows: int) -> float:
        xs = inputs(rows)
        t0 = time.perf_counter()
        for w in weights:
            block_linear.linear(xs[w.shape[1]], w, None)
        return time.perf_counter() - t0

    def mkl(rows: int) -> float:
        xs = inputs(rows)
        t0 = time.perf_counter()
        for w in dense:
            torch.nn.functional.linear(xs[w.shape[1]], w)
        return time.perf_counter() - t0

    return (
        {"ours": ours, "MKL dense fp32": mkl},
        sum(w.nbytes for w in weights),
        "fp32 on GGUF blocks (Q4_1, Q8_0 LM head)",
    )


if __name__ == "__main__":
    main()
