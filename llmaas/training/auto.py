"""OpenAI's rule for `n_epochs: "auto"`, applied once the worker has counted the training file.

From OpenAI's fine-tuning data-preparation guide: aim for 3 epochs, but have the run see at least 100 and at most
25,000 examples in total, staying within 1–25 epochs. So 10 examples train 10 epochs, 20 train 5, 1,000 train 3 and
10,000 train 2. Pure arithmetic; no I/O.
"""

from __future__ import annotations

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 100, 25_000
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 1, 25


def auto_epochs(n_examples: int) -> int:
    """n_epochs for "auto" from the number of training examples."""
    n = max(n_examples, 1)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_AUTO_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS
