"""HFTokenizer on the tiny byte-level model: eos ids, round trips, OpenAI-style token text, chat templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmaas.engine.protocol import Tokenizer
from llmaas.engine.tokenizer import HFTokenizer, flatten_content
from llmaas.errors import InvalidRequest


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_pretrained(tiny_model_dir)


def test_protocol_and_eos(tok: HFTokenizer) -> None:
    assert isinstance(tok, Tokenizer)
    assert tok.eos_token_ids == [2]  # <|im_end|>, from config.json and the tokenizer alike
    assert tok.vocab_size == 3 + 256


def test_round_trip_multibyte(tok: HFTokenizer) -> None:
    text = "héllo €uro 😀!"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode())  # byte-level: one token per byte
    assert tok.decode(ids) == text


def test_token_text_partial_utf8_like_openai(tok: HFTokenizer) -> None:
    ids = tok.encode("€")  # e2 82 ac
    assert [tok.token_text(i) for i in ids] == ["bytes:\\xe2", "bytes:\\x82", "bytes:\\xac"]
    assert tok.token_text(tok.encode("a")[0]) == "a"
    assert tok.token_text(tok.encode(" ")[0]) == " "
    assert tok.token_text(2) == "<|im_end|>"
    assert tok.token_text(10**6) == ""


def test_skip_special_tokens(tok: HFTokenizer) -> None:
    ids = [*tok.encode("hi"), 2]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "hi<|im_end|>"


def test_chat_template(tok: HFTokenizer) -> None:
    assert tok.has_chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == 1 and ids.count(1) == 2  # specials encoded once, as single ids
    parts = [
        {"type": "text", "text": "h"},
        {"type": "text", "text": "i"},
    ]  # joined with a newline, as the chat route does
    assert tok.apply_chat_template([{"role": "user", "content": parts}]) == tok.apply_chat_template(
        [{"role": "user", "content": "h\ni"}]
    )
    no_prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=False)
    assert ids[: len(no_prompt)] == no_prompt and len(no_prompt) < len(ids)


def test_no_chat_template_is_a_clear_error(tiny_model_dir_no_template: Path) -> None:
    tok = HFTokenizer.from_pretrained(tiny_model_dir_no_template)
    assert not tok.has_chat_template
    with pytest.raises(InvalidRequest, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_template_error_is_invalid_request(tiny_model_dir: Path) -> None:
    tok = HFTokenizer.from_pretrained(tiny_model_dir)
    tok.hf.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_flatten_content_is_the_one_joining_rule() -> None:
    """Text parts are joined with a newline (vLLM's and llama.cpp's rule); parts without text are left out."""
    assert flatten_content(None) == "" and flatten_content("as is") == "as is"
    parts = [
        {"type": "text", "text": "Hi"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "there"},
    ]
    assert flatten_content(parts) == "Hi\nthere"
    assert flatten_content([{"type": "output_text", "text": "ok"}, {"type": "refusal", "refusal": "no"}]) == "ok\nno"
