"""The model runner: a SchedulerOutput becomes flat input tensors, one forward pass, and logits where needed.

It owns the KV tensors (sized from the memory budget) and translates block tables into slot mappings, attention
groups and masks. It does not decide who runs (scheduler.py) or what is sampled (sampler.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from llmaas.engine.cpu import ThreadTuner, zeros_on_huge_pages
from llmaas.engine.kernels import paged_attention
from llmaas.engine.models.llama import AttnGroup, ForwardBatch, Llama, ModelArgs
from llmaas.engine.scheduler import ScheduledSeq, SchedulerOutput

log = logging.getLogger(__name__)


@dataclass
class RunnerOutput:
    logits: Tensor  # [R, V] float32
    sample_row: dict[str, int]  # request id -> its row in `logits` (requests that sample this step)
    prompt_rows: dict[str, tuple[int, int, int]]  # echo requests: id -> (first row, count, first position)


class Runner(Protocol):
    """What EngineCore needs of a runner: ModelRunner below, or models/hf_runner.py's transformers fallback."""

    device: torch.device
    vocab_size: int

    def execute(self, sched: SchedulerOutput) -> RunnerOutput: ...

    def release(self, request_id: str) -> None: ...  # the request ended: drop whatever the runner keeps for it


def kv_block_bytes(a: ModelArgs, block_size: int, dtype: torch.dtype) -> int:
    return 2 * a.n_layers * block_size * a.n_kv_heads * a.head_dim * torch.empty((), dtype=dtype).element_size()


class ModelRunner:
    def __init__(
        self,
        model: Llama,
        *,
        num_blocks: int,
        block_size: int,
        max_model_len: int,
        device: torch.device,
        dtype: torch.dtype,
        lora_manager: Any = None,
        threads: ThreadTuner | None = None,
    ) -> None:
        a = model.args
        self.threads = threads
        self.model, self.block_size, self.device, self.dtype = model, block_size, device, dtype
        self.lora_manager = lora_manager
        self.num_kv_heads, self.group, self.vocab_size = a.n_kv_heads, a.n_heads // a.n_kv_heads, a.vocab_size
        shape = (a.n_kv_heads, num_blocks, block_size, a.head_dim)  # heads first: see Attention._attend

        if device.type == "cpu":
            caches = zeros_on_huge_pages(shape, 2 * a.n_layers, dtype)
        else:
            caches = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(2 * a.n_layers)]
        self.kv_caches = list(zip(caches[0::2], caches[1::2]))  # [Hkv, N, bs, D] each, written in place
        # Attention reads the cache in place where the kernel builds here; else K/V are gathered (the torch path).
        self.paged_kernel = paged_attention.available(dtype, device, self.group, a.head_dim)
        model.setup_rope(max_model_len, device, dtype)

    # --- inputs ------------------------------------------------------------------------------------------

    def _tensor(self, data: list[int]) -> Tensor:
        return torch.tensor(data, dtype=torch.long).to(self.device, non_blocking=True)

    def _block_table(self, seqs: list[ScheduledSeq]) -> Tensor:
        """[S, nb] block ids, each row padded with block 0 to the blocks the longest sequence's last row sees."""
        nb = -(-max(s.start + s.num_new for s in seqs) // self.block_size)
        table = [b for s in seqs for b in (s.block_ids[:nb] + [0] * (nb - len(s.block_ids[:nb])))]
        return self._tensor(table).view(len(seqs), nb)

    def _paged_group(self, seqs: list[ScheduledSeq]) -> AttnGroup:
        """The whole batch for the paged kernel, which reads the cache in place: a row per token, decodes and prefill
        chunks alike, each row seeing the keys up to its own position through its sequence's table row."""
        lens = self._tensor([p + 1 for s in seqs for p in range(s.start, s.start + s.num_new)])
        row_seq = None
        if any(s.num_new > 1 for s in seqs):
            row_seq = self._tensor([i for i, s in enumerate(seqs) for _ in range(s.num_new)])
        return AttnGroup(None, self._block_table(seqs), None, len(seqs), 1, lens, row_seq=row_seq)

    def _group(self, seqs: list[ScheduledSeq], rows: list[int] | None) -> AttnGroup:
        """One attention group on the torch path: S sequences with Q query rows each, K/V gathered by block table,
        keys up to each one's last position masked in."""
        q_len, table = seqs[0].num_new, self._block_table(seqs)
        nb = table.shape[1]
        row_index = None if rows is None else self._tensor(rows)
        first = rows[0] if rows and rows == list(range(rows[0], rows[0] + len(rows))) else None
        key_pos = torch.arange(nb * self.block_size, device=self.device)  # [L]
        # last visible key of query t of sequence s: start_s + t   -> mask [1, S, G*Q, L]
        starts = self._tensor([s.start for s in seqs]).view(-1, 1)
        last = starts + torch.arange(q_len, device=self.device)  # [S, Q]
        mask = key_pos.view(1, 1, -1) <= last.unsqueeze(-1)  # [S, Q, L]
        if q_len > 1:  # rows ordered (g, t), as the attention reshapes q; one query row broadcasts instead
            mask = mask.repeat(1, self.group, 1)
        bias = torch.zeros(mask.shape, device=self.device, dtype=self.dtype).masked_fill_(~mask, float("-inf"))
        return AttnGroup(row_index, table, bias.unsqueeze(0), len(seqs), q_len, first_row=first)

    def prepare(self, sched: SchedulerOutput) -> tuple[ForwardBatch, RunnerOutput]:
        bs = self.block_size
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        out = RunnerOutput(torch.empty(0), {}, {})
        for s in sched.seqs:
            req, first = s.request, len(ids)
            ids += req.all_token_ids[s.start : s.start + s.num_new]
            positions = range(s.start, s.start + s.num_new)
            pos += positions
            slots += [s.block_ids[p // bs] * bs + p % bs for p in positions]
            rows = list(range(first, first + s.num_new))
            if req.echo_prompt_logprobs and s.start < req.num_prompt_tokens - 1:
                n = min(s.start + s.num_new, req.num_prompt_tokens - 1) - s.start  # positions predicting a prompt token
                out.prompt_rows[req.request_id] = (len(logit_rows), n, s.start)
                logit_rows += rows[:n]
            if s.sample:
                out.sample_row[req.request_id] = len(logit_rows)
                logit_rows.append(rows[-1])
        # The kernel reads each row's own keys: one group for the batch, and one long context pads nobody.
        groups = [self._paged_group(sched.seqs)] if self.paged_kernel else self._torch_groups(sched.seqs)
        lora = None
        if self.lora_manager is not None and any(s.request.adapter_id for s in sched.seqs):
            lora = self.lora_manager.prepare([s.request.adapter_id for s in sched.seqs for _ in range(s.num_new)])
        t = self._tensor
        batch = ForwardBatch(t(ids), t(pos), t(slots), groups, t(logit_rows), lora)
        return batch, out

    def _torch_groups(self, seqs: list[ScheduledSeq]) -> list[AttnGroup]:
        """The torch path's groups: decodes in length buckets, each prefill chunk alone."""
        decode: list[tuple[ScheduledSeq, int]] = []
        prefill: list[tuple[ScheduledSeq, list[int]]] = []
        first = 0
        for s in seqs:
            if s.num_new == 1:
                decode.append((s, first))
            else:
                prefill.append((s, list(range(first, first + s.num_new))))
            first += s.num_new
        buckets = _length_buckets(decode)
        single = len(prefill) + len(buckets) == 1  # one group holds every row, in order
        groups = [self._group([s for s, _ in b], None if single else [r for _, r in b]) for b in buckets]
        return groups + [self._group([s], None if single else rows) for s, rows in prefill]

    # --- execute -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        if self.threads is not None:
            self.threads.maybe_retune()
        batch, out = self.prepare(sched)
        out.logits = self.model(batch, self.kv_caches)
        return out

    def release(self, request_id: str) -> None:
        """A request ended. Nothing to do here (its KV blocks are the scheduler's); other runners keep state."""


BUCKET_MIN_LEN = 512  # contexts shorter than this always share one decode group


def _length_buckets(decode: list[tuple[ScheduledSeq, int]]) -> list[list[tuple[ScheduledSeq, int]]]:
    """Decodes grouped by context length, so that one long conversation does not pad every short one's keys
    to its length: a group's longest context is at most twice its shortest (or under BUCKET_MIN_LEN)."""
    if not decode:
        return []
    order = sorted(decode, key=lambda d: d[0].start)
    buckets = [[order[0]]]
    for d in order[1:]:
        first = buckets[-1][0][0].start
        if d[0].start > max(2 * first, BUCKET_MIN_LEN):
            buckets.append([])
        buckets[-1].append(d)
    if len(buckets) == 1:
        return [decode]  # keep batch order: with no prefill, the rows are then 0..T-1 and need no index
    return buckets
