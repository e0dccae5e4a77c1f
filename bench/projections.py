"""One decode step's bf16 projections, kernel against kernel: SmolLM2-135M's 121 matmuls (30 layers of q/k/v fused,
o, gate/up fused, down, plus the LM head), each with its own random weight so that every step streams all 269 MB
from memory as a served step does, at each row count.

    python bench/projections.py                       # 1, 4, 8, 16, 32, 64, 128, 256, 512 rows
    python bench/projections.py --rows 1,64 --rounds 9

Paths, interleaved round by round (best of --rounds each): our kernel as the engine runs it (kernels/bf16_linear: AMX
tiles where the CPU has them, AVX-512 BF16 dot products elsewhere), the same kernel built without AMX (only where the
CPU has it: what the tiles win), and oneDNN's packed matmul (torch's mkldnn linear; what the engine used before, and
still uses for shapes the panels do not fit). Prints ms per step, GFLOP/s, each path against ours, and the machine's
memory bound for reading the weights once (bench/limits.py's copy bandwidth, same run).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from limits import memory_bandwidth  # noqa: E402

from llmaas.engine import kernels  # noqa: E402
from llmaas.engine.kernels import bf16_linear  # noqa: E402

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
    if not bf16_linear.available():
        raise SystemExit("our bf16 kernel does not run here (no AVX-512 BF16): the engine serves fp32 on this CPU")
    ours = _typed(bf16_linear._lib())
    paths = {"ours": ours}
    if bf16_linear.amx():
        no_amx = kernels.load("bf16_linear", ("-mno-amx-tile", "-mno-amx-bf16", "-mno-amx-int8"))
        if no_amx is not None:
            paths["dot products (no AMX)"] = _typed(no_amx)
    weights = [torch.randn(n, k).bfloat16() * 0.05 for n, k in SHAPES]
    panels = [bf16_linear.pack(w) for w in weights]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    del weights
    weight_bytes = sum(n * k * 2 for n, k in SHAPES)
    bandwidth = memory_bandwidth()
    print(
        f"kernel: {'AMX tiles' if bf16_linear.amx() else 'AVX-512 BF16 dot products'}, {torch.get_num_threads()} threads"
    )
    print(
        f"weights {weight_bytes / 1e6:.0f} MB per step; copy bandwidth {bandwidth / 1e9:.1f} GB/s, so a step reads them"
    )
    print(f"in >= {weight_bytes / bandwidth * 1e3:.1f} ms\n")

    def step(path: str, rows: int) -> float:
        xs = {k: torch.randn(rows, k).bfloat16() for k in (DIM, INTER)}
        ys = {n: torch.empty(rows, n, dtype=torch.bfloat16) for n, _ in SHAPES}
        t0 = time.perf_counter()
        for (n, k), panel, packed in zip(SHAPES, panels, onednn):
            if path == "oneDNN":
                torch.ops.mkldnn._linear_pointwise(xs[k], packed, None, "none", [None], "")
            else:
                paths[path].llmaas_bf16_linear(xs[k].data_ptr(), panel.data_ptr(), ys[n].data_ptr(), rows, k, n)
        return time.perf_counter() - t0

    names = [*paths, "oneDNN"]
    for rows in [int(r) for r in a.rows.split(",")]:
        best = {name: float("inf") for name in names}
        for name in names:
            step(name, rows)  # warm-up
        for _ in range(a.rounds):
            for name in names:
                best[name] = min(best[name], step(name, rows))
        flops = 2 * rows * weight_bytes / 2  # two per weight (bf16: two bytes each) and row
        cells = [f"{name} {best[name] * 1e3:7.2f} ms ({flops / best[name] / 1e9:5.0f} GFLOP/s)" for name in names]
        ratios = ", ".join(f"{name} {best[name] / best['ours']:.2f}x" for name in names[1:])
        print(f"{rows:4d} rows: " + "  ".join(cells) + f"  | as slow as ours: {ratios}", flush=True)


if __name__ == "__main__":
    main()
