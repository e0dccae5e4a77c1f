"""What a training step minimizes: supervised next-token loss, or DPO's preference loss, behind one small interface.

An objective encodes rows (chat Examples or DPO Preferences) into its own data, yields shuffled batches, and
`measure()`s a batch: the loss to backpropagate plus (correct, count) for an accuracy. Supervised: cross-entropy on
the assistant tokens, accuracy = argmax tokens that match. DPO (Rafailov et al. 2023): with the LoRA adapter as the
policy and the same model with the adapter switched off as the reference (no second copy of the weights),
loss = -log σ(β · ((log π(y⁺) - log π_ref(y⁺)) - (log π(y⁻) - log π_ref(y⁻)))) on the summed log-probabilities of each
output's tokens; accuracy = pairs whose implicit reward ranks the preferred output first. No jobs, files or HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from llmaas.training.dataset import IGNORE, Encoded, batches, encode_all, encode_example, pad, usable
from llmaas.training.files import Preference

Batch = tuple[torch.Tensor, ...]


@dataclass(slots=True)
class Measured:
    loss: torch.Tensor  # a scalar, the batch mean
    correct: int
    count: int  # tokens (supervised) or pairs (dpo) the loss averages over


class Objective(Protocol):
    def encode(self, rows: Sequence[Any]) -> list[Any]: ...

    def batches(self, data: Sequence[Any], batch_size: int, seed: int | None) -> Iterator[Batch]: ...

    def measure(self, model: Any, batch: Batch) -> Measured: ...


def _logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits for positions 0..T-2, in fp32 (the loss wants it even when the model runs in bf16)."""
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()


class Supervised:
    def __init__(self, tokenizer: Any, max_len: int, pad_id: int, device: str) -> None:
        self.tokenizer, self.max_len, self.pad_id, self.device = tokenizer, max_len, pad_id, device

    def encode(self, rows: Sequence[Any]) -> list[Encoded]:
        return encode_all(self.tokenizer, rows, self.max_len)

    def batches(self, data: Sequence[Encoded], batch_size: int, seed: int | None) -> Iterator[Batch]:
        return batches(data, batch_size, pad_id=self.pad_id, seed=seed)

    def measure(self, model: Any, batch: Batch) -> Measured:
        ids, mask, labels = (t.to(self.device) for t in batch)
        logits, targets = _logits(model, ids, mask), labels[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
        trained = targets != IGNORE
        correct = int(((logits.argmax(-1) == targets) & trained).sum())
        return Measured(loss, correct, int(trained.sum()))


def sequence_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ log p(token) over each row's labelled tokens: [B]."""
    logits, targets = _logits(model, ids, mask), labels[:, 1:]
    trained = targets != IGNORE
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * trained).sum(-1)


class DPO:
    def __init__(self, tokenizer: Any, max_len: int, pad_id: int, device: str, beta: float) -> None:
        self.tokenizer, self.max_len, self.pad_id, self.device, self.beta = tokenizer, max_len, pad_id, device, beta

    def encode(self, rows: Sequence[Preference]) -> list[tuple[Encoded, Encoded]]:
        pairs = []
        for row in rows:
            good = encode_example(self.tokenizer, row.preferred, self.max_len, last_only=True)
            bad = encode_example(self.tokenizer, row.non_preferred, self.max_len, last_only=True)
            if usable(good) and usable(bad):
                pairs.append((good, bad))
        return pairs

    def batches(self, data: Sequence[tuple[Encoded, Encoded]], batch_size: int, seed: int | None) -> Iterator[Batch]:
        order = list(range(len(data)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        for i in range(0, len(order), batch_size):
            chunk = [data[k] for k in order[i : i + batch_size]]
            # One padded batch: the preferred outputs are rows [0, B), the non-preferred rows [B, 2B).
            yield pad([g for g, _ in chunk] + [b for _, b in chunk], self.pad_id)

    def measure(self, model: Any, batch: Batch) -> Measured:
        ids, mask, labels = (t.to(self.device) for t in batch)
        policy = sequence_logprobs(model, ids, mask, labels)
        with torch.no_grad(), model.disable_adapter():
            reference = sequence_logprobs(model, ids, mask, labels)
        n = ids.shape[0] // 2
        ratio = policy - reference
        margin = self.beta * (ratio[:n] - ratio[n:])
        return Measured(-F.logsigmoid(margin).mean(), int((margin > 0).sum()), n)


def make_objective(method: str, tokenizer: Any, *, max_len: int, pad_id: int, device: str, beta: float) -> Objective:
    if method == "dpo":
        return DPO(tokenizer, max_len, pad_id, device, beta)
    return Supervised(tokenizer, max_len, pad_id, device)
