"""Chat examples → token ids + an assistant-only loss mask, through the model's own chat template.

How the mask is found: the conversation is rendered as text once; for each assistant turn, rendering the turns
before it with the generation prompt gives where its answer starts, and rendering through it gives where it ends
(including the end-of-turn token, so the model learns to stop). Tokens whose characters start inside those spans
are trained on; everything else is labelled -100. The template is the model's (from our own store), never a
client's. This module does not batch across devices or shuffle; the trainer does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmaas.training.files import Example

IGNORE = -100


@dataclass(slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken

    @property
    def num_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    # No template: a plain transcript, so base models without one can still be tuned.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of each assistant answer."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(through) or not through.startswith(before):
            raise ValueError("the model's chat template does not render conversations prefix by prefix")
        spans.append((len(before), len(through)))
    return full, spans


def encode_example(tokenizer: Any, example: Example, max_len: int, *, last_only: bool = False) -> Encoded:
    """Tokens and labels for one example, truncated to max_len (the end is dropped, as OpenAI does).

    `last_only` trains on the final assistant answer alone (DPO scores the output, not earlier turns).
    """
    text, spans = assistant_spans(tokenizer, example.messages)
    spans = spans[-1:] if last_only else spans
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for j, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(s <= start < e for s, e in spans):
            labels[j] = ids[j]
    return Encoded(ids[:max_len], labels[:max_len])


def usable(e: Encoded) -> bool:
    """Something left to learn after truncation (a label that has a token before it)."""
    return e.num_trained > 1 or (e.num_trained == 1 and len(e.input_ids) > 1)


def encode_all(tokenizer: Any, examples: Sequence[Example], max_len: int) -> list[Encoded]:
    return [e for e in (encode_example(tokenizer, ex, max_len) for ex in examples) if usable(e)]


def pad(rows: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T], labels [B, T]), right-padded to the longest row."""
    width = max(len(e.input_ids) for e in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(rows):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        mask[r, :n] = 1
        labels[r, :n] = torch.tensor(e.labels)
    return ids, mask, labels


def batches(
    data: Sequence[Encoded], batch_size: int, *, pad_id: int, seed: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids [B, T], attention_mask [B, T], labels [B, T]) right-padded; shuffled when a seed is given."""
    order = list(range(len(data)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), batch_size):
        yield pad([data[k] for k in order[i : i + batch_size]], pad_id)
