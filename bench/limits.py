"""The machine's physical limits, measured in-process with torch, and the tok/s bounds they imply for a model.

Memory bandwidth comes from a large tensor copy (bytes read + bytes written per second); matmul FLOP/s from square
fp32 and bf16 matmuls. A decode step must stream every weight once, so batch-1 tok/s <= bandwidth / parameter bytes;
a large batch is compute-bound, so tok/s <= FLOP/s / (2 x params). These are ceilings, not predictions: attention,
the KV cache and the Python around the model are left out. Not a general-purpose microbenchmark.
"""

from __future__ import annotations

import time
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _best_of(fn, reps: int) -> float:
    """Fastest wall time of `reps` calls (the least disturbed by the other work on a shared CPU)."""
    fn()  # warm up: page faults, thread pool start
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_bandwidth(mb: int = 512, reps: int = 5) -> float:
    """Bytes/s of a `mb`-MiB tensor copy, counting both the read and the write."""
    import torch

    n = mb * 1024 * 1024 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = _best_of(lambda: dst.copy_(src), reps)
    return 2 * src.numel() * 4 / t


def matmul_flops(dtype_name: str, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in the given dtype (2 n^3 FLOPs)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    if dtype_name == "bfloat16" and not ({"avx512_bf16", "amx_bf16"} & cpu_flags()):
        n_small = 256  # emulated bf16 is ~100x slower: measure a small one rather than wait minutes
        a, b, c = (
            a[:n_small, :n_small].contiguous(),
            b[:n_small, :n_small].contiguous(),
            c[:n_small, :n_small].contiguous(),
        )
        n = n_small
    t = _best_of(lambda: torch.matmul(a, b, out=c), reps)
    return 2 * n**3 / t


def measure(num_params: int, gguf_bytes: int | None = None) -> dict:
    """Measure the machine and derive per-dtype tok/s bounds for a model with `num_params` parameters."""
    import torch

    bw = memory_bandwidth()
    fp32 = matmul_flops("float32")
    bf16 = matmul_flops("bfloat16")
    out = {
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_native": bool({"avx512_bf16", "amx_bf16"} & cpu_flags()),
        "mem_bandwidth_GBps": bw / 1e9,
        "matmul_fp32_GFLOPs": fp32 / 1e9,
        "matmul_bf16_GFLOPs": bf16 / 1e9,
        "num_params": num_params,
        "bounds": {},
    }
    for name, bytes_per_param, flops in (("fp32", 4, fp32), ("bf16", 2, bf16)):
        out["bounds"][name] = {
            "weight_bytes": num_params * bytes_per_param,
            "batch1_tok_s": bw / (num_params * bytes_per_param),
            "large_batch_tok_s": flops / (2 * num_params),
        }
    # weight-only int8 (quantization: int8) streams one byte per weight; its large batches run dense, as bf16
    out["bounds"]["int8"] = {"weight_bytes": num_params, "batch1_tok_s": bw / num_params, "large_batch_tok_s": None}
    if gguf_bytes:  # llama.cpp streams the quantized file; its batch-1 ceiling is higher
        out["bounds"]["gguf_q4_1"] = {
            "weight_bytes": gguf_bytes,
            "batch1_tok_s": bw / gguf_bytes,
            "large_batch_tok_s": None,
        }
    return out


def best_limits(a: dict, b: dict) -> dict:
    """Per figure, the higher of two measurements (other work on a shared CPU only ever lowers them)."""
    out = a if a["mem_bandwidth_GBps"] >= b["mem_bandwidth_GBps"] else b
    out = {**out, "bounds": {k: dict(v) for k, v in out["bounds"].items()}}
    bw = max(a["mem_bandwidth_GBps"], b["mem_bandwidth_GBps"])
    fp32 = max(a["matmul_fp32_GFLOPs"], b["matmul_fp32_GFLOPs"])
    bf16 = max(a["matmul_bf16_GFLOPs"], b["matmul_bf16_GFLOPs"])
    out.update(mem_bandwidth_GBps=bw, matmul_fp32_GFLOPs=fp32, matmul_bf16_GFLOPs=bf16)
    for name, v in out["bounds"].items():
        v["batch1_tok_s"] = bw * 1e9 / v["weight_bytes"]
        flops = {"fp32": fp32, "bf16": bf16}.get(name)
        v["large_batch_tok_s"] = flops * 1e9 / (2 * out["num_params"]) if flops else None
    return out


def count_params(hf_dir: Path) -> int:
    """Parameters in the converted folder (tied lm_head counted once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(hf_dir / "model.safetensors"), framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open is not a dict: it is not iterable
            shape = f.get_slice(k).get_shape()
            n = 1
            for s in shape:
                n *= s
            total += n
    return total


def format_limits(lim: dict) -> str:
    b = lim["bounds"]
    lines = [
        f"machine: {lim['torch_threads']} torch threads, native bf16: {lim['cpu_bf16_native']}",
        f"  memory bandwidth (copy, read+write): {lim['mem_bandwidth_GBps']:.1f} GB/s",
        f"  matmul fp32: {lim['matmul_fp32_GFLOPs']:.0f} GFLOP/s   bf16: {lim['matmul_bf16_GFLOPs']:.0f} GFLOP/s",
        f"  model: {lim['num_params'] / 1e6:.1f} M params",
    ]
    for name, v in b.items():
        big = f"{v['large_batch_tok_s']:.0f}" if v["large_batch_tok_s"] else "-"
        lines.append(
            f"  bound {name:10s}: batch-1 {v['batch1_tok_s']:.0f} tok/s ({v['weight_bytes'] / 1e6:.0f} MB/token)"
            f"   large-batch {big} tok/s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from convert import gguf_path, hf_folder

    print(format_limits(measure(count_params(hf_folder()), gguf_path().stat().st_size)))
