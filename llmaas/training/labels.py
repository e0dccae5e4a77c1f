"""Validation accuracy for classifiers: when every validation answer is one of a few labels, score them as labels.

A classifier's training data is chat with the text as the user's message and the label as the assistant's answer
(what the console builds from `text,label` rows). If every validation example ends in an answer from a set of
2–`MAX_LABELS` distinct labels, each checkpoint also scores the first `MAX_SCORED` validation examples the way
`/v1/classifications` does: the conversation before the answer, templated with the generation prompt, then each
label's tokens + the end-of-turn token; the label with the highest total log-probability is the prediction. The
result is the accuracy and a confusion matrix (rows: the true label, columns: the predicted one). No jobs or I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmaas.training.dataset import IGNORE, Encoded, pad
from llmaas.training.files import Example
from llmaas.training.objectives import sequence_logprobs

MAX_LABELS = 16  # as limits.max_classification_labels' default
MAX_SCORED = 256  # validation examples scored per checkpoint (each costs one forward pass per label)


def label_set(examples: Sequence[Any]) -> list[str] | None:
    """The sorted labels when every example is a chat ending in one of 2..MAX_LABELS answers; None otherwise."""
    if not examples or not all(isinstance(e, Example) and e.messages[-1]["role"] == "assistant" for e in examples):
        return None
    labels = sorted({e.messages[-1]["content"] for e in examples})
    return labels if 2 <= len(labels) <= MAX_LABELS else None


def _prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def classification_report(
    model: Any, tokenizer: Any, examples: Sequence[Example], labels: list[str], device: str
) -> dict[str, Any]:
    """{"labels", "confusion_matrix", "accuracy"} over the first MAX_SCORED examples."""
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    answers = [list(tokenizer(label, add_special_tokens=False)["input_ids"]) + end for label in labels]
    matrix = [[0] * len(labels) for _ in labels]
    for example in examples[:MAX_SCORED]:
        prompt = _prompt_ids(tokenizer, example.messages[:-1])
        rows = [Encoded(prompt + a, [IGNORE] * len(prompt) + a) for a in answers]
        ids, mask, target = (t.to(device) for t in pad(rows, pad_id))
        scores = sequence_logprobs(model, ids, mask, target)
        matrix[labels.index(example.messages[-1]["content"])][int(scores.argmax())] += 1
    model.train()
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {"labels": labels, "confusion_matrix": matrix, "accuracy": correct / max(total, 1)}
