"""CPU tuning, in one place so that the model reads like the model: oneDNN-packed projections, the row counts they
run at, how many intra-op threads the forward uses, and the KV cache's memory on huge pages.

Nothing here changes a result: packed weights are used only where they compute exactly what `F.linear` does (checked
when packing), and the thread count is a speed choice. CUDA never reaches this module's paths.
"""

from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmaas.engine.kernels import bf16_linear, block_linear, int8_linear

log = logging.getLogger(__name__)


class Linear(nn.Linear):
    """nn.Linear that can run on a packed copy of its weight (CPU bf16; see `pack`), on int8 weights with a scale per
    output row (`quantize_int8`; kernels/int8_linear), or on the GGUF blocks its fp32 weight exactly is
    (`use_blocks`; kernels/block_linear).

    Packing reorders the weight once, for one of two bf16 matmuls: our AVX-512 BF16 kernel's panels
    (kernels/bf16_linear: AVX-512 BF16 dot products, or AMX tiles; faster than oneDNN at the row counts a decode
    step has on every CPU where it was measured), or
    else oneDNN's blocked layout, which on the AVX-512-bf16 CPU it was first measured on was 2x faster than F.linear
    at 1 row and 10-20% at 32-512 rows, with bit-identical results (checked at pack time). That one is a private
    ATen op (the one inductor's weight freezing uses), so it is probed, never assumed.
    """

    panels: Tensor | None = None  # bf16, kernels/bf16_linear's layout
    packed: Tensor | None = None
    qweight: Tensor | None = None  # int8 [out, in]
    qscale: Tensor | None = None  # fp32 [out]
    blocks: block_linear.Blocks | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.blocks is not None:
            return block_linear.linear(x, self.blocks, self.bias)
        if self.qweight is not None and self.qscale is not None:
            return int8_linear.linear(x, self.qweight, self.qscale, self.bias)
        if self.panels is not None:
            return bf16_linear.linear(x, self.panels, self.out_features, self.bias)
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        rows = x.shape[0]  # x: [T, in]
        padded = padded_rows(rows)
        if padded != rows:
            x = _padded(x, padded)
        y: Tensor = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [None], "")
        return y[:rows]

    def forward_fp32(self, x: Tensor) -> Tensor:
        """forward(x) in fp32 (the LM head's logits): on the bf16 kernel's panels, its fp32 sums as they are, one
        rounding and one [rows, vocab] conversion pass fewer; elsewhere forward(x).float()."""
        if self.panels is not None and self.blocks is None and self.qweight is None:
            return bf16_linear.linear(x, self.panels, self.out_features, self.bias, torch.float32)
        y: Tensor = self(x)
        return y.float()

    def quantize_int8(self, keep_weight: bool = False) -> bool:
        """Serve from int8 weights from now on (True), unless the input dimension does not split into int8 groups
        (False, unchanged). The original weight is dropped unless `keep_weight` (shared with another module)."""
        if self.in_features % int8_linear.GROUP:
            return False
        self.qweight, self.qscale = int8_linear.quantize(self.weight)
        if not keep_weight:
            self.weight = nn.Parameter(self.weight.new_empty(0), requires_grad=False)
        return True

    def use_blocks(self, keep_weight: bool = False) -> bool:
        """Serve from the Q4_1/Q8_0 blocks the fp32 weight dequantizes from, if it is exactly such blocks (True);
        False (unchanged) if not. The fp32 weight is dropped unless `keep_weight` (shared with another module)."""
        self.blocks = block_linear.recover(self.weight)
        if self.blocks is None:
            return False
        if not keep_weight:
            self.weight = nn.Parameter(self.weight.new_empty(0), requires_grad=False)
        return True

    def pack(self, keep_weight: bool = False) -> bool:
        """Use a packed weight from now on: bf16_linear's panels where they fit and agree with the fp32 product to
        bf16 precision, else oneDNN's if it computes exactly what F.linear does; False (unchanged) if neither.

        The packed copy then replaces the weight (one copy in memory, not two) unless `keep_weight` (a weight shared
        with another module, e.g. the embedding tied to the LM head)."""
        if bf16_linear.available() and bf16_linear.fits(self.weight):
            self.panels = bf16_linear.pack(self.weight)
            x = torch.randn(7, self.in_features, dtype=self.weight.dtype)
            reference = F.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())
            error = (self(x).float() - reference).abs().max().item()
            if error <= 1e-2 * reference.abs().max().item():  # bf16 output rounding is 2^-9 relative
                if not keep_weight:
                    self.weight = nn.Parameter(self.weight.new_empty(0), requires_grad=False)
                return True
            log.warning(
                "bf16 kernel disagrees with F.linear (%.3g off) on a %s weight: using oneDNN",
                error,
                [*self.weight.shape],
            )
            self.panels = None
        try:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            for m in (1, 3, 67):  # decode-sized and prefill-sized (padded) row counts
                x = torch.randn(m, self.in_features, dtype=self.weight.dtype)
                if not torch.equal(self(x), F.linear(x, self.weight, self.bias)):
                    self.packed = None
                    return False
        except (RuntimeError, AttributeError):  # no oneDNN, or an op signature from another torch version
            self.packed = None
            return False
        if not keep_weight:
            self.weight = nn.Parameter(self.weight.new_empty(0), requires_grad=False)
        return True


class _PadBuffers(threading.local):
    """Per thread (each engine steps in one thread; two chat models in one process must not share a buffer), per
    input width and dtype: a buffer of the most rows any call there padded to."""

    def __init__(self) -> None:
        self.by_shape: dict[tuple[int, torch.dtype], Tensor] = {}


_pad_buffers = _PadBuffers()


def _padded(x: Tensor, rows: int) -> Tensor:
    """x [T, in] as the first T rows of a [rows, in] view of a reused buffer. The rows past T hold zeros or an earlier
    call's activations: each output row depends on its own input row only, and those outputs are dropped. F.pad
    zero-filled a new tensor at every projection (the profiler's largest op after the matmuls and attention in a
    step that prefills beside decodes)."""
    buffers = _pad_buffers.by_shape
    key = (x.shape[1], x.dtype)
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < rows:
        buf = buffers[key] = x.new_zeros(rows, x.shape[1])
    buf[: x.shape[0]].copy_(x)
    return buf[:rows]


def padded_rows(rows: int) -> int:
    """The row count a packed matmul runs at: `rows` rounded up to a few dozen sizes.

    oneDNN builds (slowly) and caches one kernel per input shape; continuous batching feeds every row count from 1 to
    the token budget, and the cache of all those kernels grew the server by ~150 MB over a few hundred requests here.
    Up to 8 rows (latency-bound decodes) run exact; the rest pay at most a few padded rows.
    """
    if rows <= 8:
        return rows
    step = 8 if rows <= 64 else 32 if rows <= 512 else 128
    return -(-rows // step) * step


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may actually use: its affinity mask (taskset, a cpuset), capped by a CFS quota (a
    container's CPU limit, cgroup v2 or v1). torch counts the machine's cores: in a pod limited to 2 CPUs on a 64-core
    node, 64 OpenMP threads would share 2 CPUs' worth of time and stall at every barrier."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            quota = fields[0]
            period = fields[1] if period_file is None else (cgroup / period_file).read_text().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
            break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cores)


def choose_threads(one: float, many: float, n: int) -> int:
    """The probe's rule, from the median time per call with one thread and with `n`: one thread only when it wins
    by 20%; a tie keeps all threads (see ThreadTuner)."""
    return 1 if one < 0.8 * many else n


def next_probe_delay(chosen: int, n: int, previous: float | None, interval: float) -> float:
    """Seconds until the probe runs again: `interval` after it chose all `n` threads. After it chose fewer, 2 s,
    doubling while it keeps choosing fewer, up to `interval`: a neighbour's burst (a serving benchmark's previous
    server still spinning its threads) then costs seconds at one thread, not a whole interval, and a host that stays
    oversubscribed pays a few more probes (~0.3 s each) before they space out. `previous` is the delay set by the
    last probe if that one also chose fewer threads, else None."""
    if chosen >= n:
        return interval
    return min(2.0 if previous is None else 2 * previous, interval)


PROBE_WINDOWS = 7  # alternating 1 and all threads, 40 ms each
PROBE_WINDOW_S = 0.04
QUIET_S = 0.5  # a pause this long between forwards ends a busy spell
BUSY_BEFORE_PROBE_S = 1.0  # the probe waits for this much continuous work


class ThreadTuner:
    """CPU: how many intra-op threads the forward pass uses, re-measured every `interval` seconds while it runs.

    Measured, not assumed: on a shared, oversubscribed host, OpenMP barriers make multi-threaded small matmuls
    5-20x slower than one thread (seen here: ~1.4 s vs ~0.2 s per 32-stream decode step); on an idle host all
    threads win by up to their count. Other tenants come and go, so one measurement at startup goes stale: the probe
    (7 windows of 40 ms, alternating, one before each of 7 forwards) reruns every `interval` s while the engine is
    busy, bounding a wrong choice to that long, and sooner after it chose fewer threads (`next_probe_delay`). One
    thread must win by 20% on the median of its windows to be chosen: a median ignores the one window a neighbour's
    burst lands in (comparing every window pair kept one thread on a 2-core serving benchmark where two
    were 1.7x faster, and vLLM's two bound threads won by as much), a host that is really oversubscribed slows every
    multi-threaded window by far more than that, and a tie keeps all threads (asking all threads to win by 20%
    instead picked one thread in 4 of 8 probes in a row on a quiet 2-core VM, where two served a stream ~1.5x
    faster).
    `fixed` (the `num_threads` setting, LLMAAS_NUM_THREADS) sets the count and turns the probe off. Process-wide
    (torch has one pool).
    """

    def __init__(
        self, model: Any, *, interval: float = 20.0, fixed: int | None = None, clock: Any = time.monotonic
    ) -> None:
        self.model, self.interval, self._clock = model, interval, clock
        if fixed is not None and fixed > 0:
            torch.set_num_threads(fixed)
        elif "OMP_NUM_THREADS" not in os.environ:  # an explicit OpenMP setting is the operator's choice
            torch.set_num_threads(min(torch.get_num_threads(), usable_cores()))
        self.max_threads = torch.get_num_threads()
        self.fixed = (fixed is not None and fixed > 0) or self.max_threads <= 1
        self.chosen = self.max_threads
        self._next = 0.0
        self._delay: float | None = None  # the last delay after choosing fewer threads (see next_probe_delay)
        self._last_call = self._busy_since = -math.inf
        self._windows: list[float] | None = None  # a probe under way: its windows so far

    def maybe_retune(self) -> None:
        """Called before each forward. A probe starts once the delay set by the last one has passed and the engine
        has been busy for a second without a pause, and takes one of its windows per forward, so that no request
        waits all seven (~0.3 s) at once: one that arrived then waited for all of them (+0.27 s to its first token,
        every 20 s of busy time, here). Never at the first forward after a quiet spell: the API process is then
        busy with the requests that ended it, a neighbour the probe would count against the multi-threaded
        windows."""
        now = self._clock()
        if now - self._last_call > QUIET_S:
            self._busy_since, self._windows = now, None  # a probe cut by the pause starts again later
        self._last_call = now
        if self.fixed:
            return
        if self._windows is None and now >= self._next and now - self._busy_since >= BUSY_BEFORE_PROBE_S:
            self._windows = []
        if self._windows is not None:
            self._windows.append(self._time_per_call(self._window_threads(len(self._windows)), PROBE_WINDOW_S))
            if len(self._windows) == PROBE_WINDOWS:
                self._decide(self._windows)
                self._windows = None
            torch.set_num_threads(self.chosen)  # the forward itself runs on the current choice

    def retune(self, window: float = PROBE_WINDOW_S) -> int:
        """A whole probe now (all windows back to back)."""
        return self._decide([self._time_per_call(self._window_threads(i), window) for i in range(PROBE_WINDOWS)])

    def _window_threads(self, i: int) -> int:
        return 1 if i % 2 == 0 else self.max_threads  # 1, n, 1, n, ...: a change in the neighbours' load hits both

    def _time_per_call(self, threads: int, window: float) -> float:
        # Sustained work over a window of several scheduler time slices, not medians of short bursts: a burst can
        # land in a neighbour's pause, while a descheduled thread stalls every OpenMP barrier of real work.
        w = self.model.layers[0].mlp.w_gate_up  # [2I, dim]: the largest per-layer matmul
        x = torch.randn(16, w.in_features, dtype=w.weight.dtype, device=w.weight.device)  # a decode batch
        torch.set_num_threads(threads)
        w(x)
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < window:
            w(x)
            calls += 1
        return elapsed / calls

    def _decide(self, times: list[float]) -> int:
        n = self.max_threads
        one, many = statistics.median(times[0::2]), statistics.median(times[1::2])
        chosen = choose_threads(one, many, n)
        torch.set_num_threads(chosen)
        if chosen != self.chosen or self._next == 0.0:
            log.info(
                "engine: %d intra-op thread(s) (matmul probe, median: %.2f ms with %d, %.2f ms with 1)",
                chosen,
                many * 1e3,
                n,
                one * 1e3,
            )
        delay = next_probe_delay(chosen, n, self._delay, self.interval)
        self._delay = delay if chosen < n else None
        self.chosen, self._next = chosen, self._clock() + delay
        return chosen


class TiedEmbedding(nn.Module):
    """The embedding table of a model whose LM head is tied to it and runs on a packed copy of it (GGUF blocks,
    `Linear.use_blocks`, or bf16_linear's panels, `Linear.pack`): each step's rows are read out of the LM head's
    copy (bit for bit the rows of the table) instead of keeping the table twice (113 MB for SmolLM2 in fp32, 56 MB
    in bf16)."""

    def __init__(self, lm_head: Linear) -> None:
        super().__init__()
        assert lm_head.blocks is not None or lm_head.panels is not None
        self.lm_head = [lm_head]  # a list: not registered as a submodule twice

    def forward(self, ids: Tensor) -> Tensor:
        head = self.lm_head[0]
        if head.blocks is not None:
            return block_linear.rows(head.blocks, ids)
        assert head.panels is not None
        return bf16_linear.rows(head.panels, head.out_features, ids)


def release_freed_memory() -> None:
    """Hand the heap that a large, finished job freed (loading, a GGUF conversion) back to the OS: glibc keeps it
    otherwise, counted in the process's RSS (~50 MB after loading the engine, ~240 MB after converting SmolLM2)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def zeros_on_huge_pages(shape: tuple[int, ...], count: int, dtype: torch.dtype) -> list[Tensor]:
    """`count` zeroed CPU tensors of `shape`: views of one anonymous mapping, advised onto 2 MB pages and faulted in
    at once.

    Decode attention reads each sequence's K/V blocks from all over the cache: with 4 KB pages nearly every block
    costs a TLB miss on small pages. Weights and temporaries stay on the allocator's pages: making every large
    allocation huge (torch's THP_MEM_ALLOC_ENABLE) made whole decode steps slower, not faster. Every page is touched
    here, at start: left to first use, the page faults (with the kernel's compaction for huge pages) landed in the
    steps that write new K/V, and the block pool hands out every never-used block before it evicts a cached one, so
    they went on until the whole cache had been used once: ~10 ms of a 128-token prefill's ~100 on the Zen 4 CPU
    this was measured on. The cache's memory is then taken at start, the `kv_cache_mb` a deployment sizes for, not
    hours later. Without huge-page support the advice is a no-op.
    """
    per = math.prod(shape) * dtype.itemsize
    # Private and anonymous (a shared mapping would be shmem, which huge-page advice does not reach); the kernel
    # zero-fills each page on first touch.
    buf = mmap.mmap(-1, per * count, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux
        buf.madvise(mmap.MADV_HUGEPAGE)
    flat = torch.frombuffer(buf, dtype=torch.uint8)  # shares the mapping, which it keeps alive
    flat[:: mmap.PAGESIZE].zero_()  # one write per page faults it in (zeros: what it already reads as)
    return [flat[i * per : (i + 1) * per].view(dtype).view(shape) for i in range(count)]
