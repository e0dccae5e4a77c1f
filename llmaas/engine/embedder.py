"""TransformersEmbedder: sentence embeddings (mean pooling over the attention mask, L2-normalized) via transformers.

Encoder models such as all-MiniLM-L6-v2 (BERT) are not our engine's business: transformers runs them, in a worker
thread so the event loop never blocks, in batches of similar length so little compute goes to padding.
It does not truncate: inputs longer than `max_model_len` are refused (the API checks first and says so clearly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmaas.engine.tokenizer import HFTokenizer
from llmaas.errors import ContextLengthExceeded, InvalidRequest

log = logging.getLogger(__name__)

_BATCH = 32


class TransformersEmbedder:
    """Implements `llmaas.engine.protocol.Embedder`."""

    def __init__(
        self,
        model_name: str,
        folder: Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_model_len: int | None = None,
    ) -> None:
        from transformers import AutoModel

        self.model_name = model_name
        self.device = torch.device(device)
        self.tokenizer = HFTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True, dtype=dtype
        ).to(self.device)
        self.model.eval()
        self.dimensions: int = int(self.model.config.hidden_size)
        # max_model_len counts the input's own tokens; [CLS] and [SEP] are added on top.
        self._prefix, self._suffix = _special_wrapping(self.tokenizer.hf)
        self._num_specials = len(self._prefix) + len(self._suffix)
        limit = _model_limit(folder, self.model.config)
        if max_model_len is not None:
            limit = min(limit, max_model_len + self._num_specials)
        self.max_model_len: int = limit - self._num_specials
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
        """Normalized embeddings, one per input, in order, and the number of input tokens."""
        return await asyncio.to_thread(self.embed_sync, inputs)

    def embed_sync(self, inputs: Sequence[str | list[int]]) -> tuple[list[list[float]], int]:
        ids = [self._ids(x, i) for i, x in enumerate(inputs)]
        num_tokens = sum(len(x) for x in ids)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[list[float]] = [[] for _ in ids]
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), _BATCH):
                chunk = order[start : start + _BATCH]
                vectors = self._forward([ids[i] for i in chunk])
                for i, v in zip(chunk, vectors.tolist()):
                    out[i] = v
        return out, num_tokens

    # --- internals ----------------------------------------------------------------------------------

    def _ids(self, x: str | list[int], index: int) -> list[int]:
        if isinstance(x, str):
            ids = self.tokenizer.encode(x, add_special_tokens=False)
        else:
            ids = list(x)
            if any(not isinstance(t, int) or t < 0 or t >= self.tokenizer.vocab_size for t in ids):
                raise InvalidRequest(f"input[{index}] has token ids outside this model's vocabulary", param="input")
        if len(ids) > self.max_model_len:
            raise ContextLengthExceeded(
                f"input[{index}] has {len(ids)} tokens; this model accepts at most {self.max_model_len}", param="input"
            )
        return ids

    def _forward(self, batch: list[list[int]]) -> torch.Tensor:
        full = [self._prefix + x + self._suffix for x in batch]
        width = max(len(x) for x in full)
        pad = self.tokenizer.hf.pad_token_id or 0
        input_ids = torch.full((len(full), width), pad, dtype=torch.long)
        mask = torch.zeros((len(full), width), dtype=torch.long)
        for r, x in enumerate(full):
            input_ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()  # [B, T, H]
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu()


def _special_wrapping(hf: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one input ([CLS] … [SEP] for BERT), found by example."""
    plain = list(hf.encode("a", add_special_tokens=False))
    full = list(hf.encode("a", add_special_tokens=True))
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k], full[k + len(plain) :]
    return [], []


def _model_limit(folder: Path, config: Any) -> int:
    """sentence-transformers' max_seq_length when present (MiniLM: 256), else the position embeddings."""
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        try:
            value = json.loads(st.read_text()).get("max_seq_length")
            if isinstance(value, int) and value > 0:
                return value
        except (ValueError, OSError):
            pass
    return int(getattr(config, "max_position_embeddings", 512))
