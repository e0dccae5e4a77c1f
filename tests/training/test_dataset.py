"""Tokenization with an assistant-only loss mask, through the model's own chat template."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from llmaas.training.dataset import IGNORE, batches, encode_example
from llmaas.training.files import Example


def test_only_assistant_tokens_are_trained(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example(
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "B2"},
        ]
    )
    enc = encode_example(tok, ex, 1024)
    trained = tok.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != IGNORE])
    # both answers, each with its end-of-turn marker (so the model learns to stop); nothing of the prompts
    assert trained == "A1<|im_end|>\nB2<|im_end|>\n"
    assert tok.decode(enc.input_ids).startswith("<|im_start|>system\nsys<|im_end|>")


def test_truncation_and_batching(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = Example([{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y" * 50}])
    short = Example([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    encs = [encode_example(tok, long, 64), encode_example(tok, short, 64)]
    assert len(encs[0].input_ids) == 64
    ((ids, mask, labels),) = list(batches(encs, 2, pad_id=2))
    assert ids.shape == mask.shape == labels.shape == (2, 64)
    assert int(mask[1].sum()) == len(encs[1].input_ids)
    assert (labels[1][mask[1] == 0] == IGNORE).all()
