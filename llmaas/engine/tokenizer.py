"""HFTokenizer: the engine's tokenizer, a thin wrapper over a transformers (fast) tokenizer.

It encodes, decodes, renders the model's own chat template (transformers' sandboxed Jinja) and gives each token's
text the way OpenAI's logprobs show it. It is not a detokenizer for streams (see detokenizer.py) and it never renders
a template a client sends: only the one shipped with the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmaas.errors import InvalidRequest

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte-fallback pieces


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable stand-in character -> raw byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if v is not None]


def flatten_content(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """A message's content as the one string a chat template renders (the only place content parts are joined).

    None is "", a string stays as it is; of content parts, each part's `text` (a refusal part's `refusal`) counts,
    parts with neither are left out, and the texts are joined with a newline.

    NOTE: the newline is the rule of vLLM and llama.cpp's server for OpenAI content parts, and what the chat route has
    always sent to the model ("Hi" + "there" is "Hi\nthere", never "Hithere"). Text-only templates (ChatML, Llama's)
    render `message['content']` as a string, so the parts must be joined before the template sees them.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [part.get("text") if isinstance(part.get("text"), str) else part.get("refusal") for part in content]
    return "\n".join(t for t in texts if isinstance(t, str))


class HFTokenizer:
    """Implements `llmaas.engine.protocol.Tokenizer` over a `PreTrainedTokenizerBase`."""

    def __init__(self, hf_tokenizer: Any, eos_token_ids: Sequence[int] = ()) -> None:
        self.hf = hf_tokenizer
        eos = list(dict.fromkeys([*eos_token_ids, *_as_id_list(hf_tokenizer.eos_token_id)]))
        self.eos_token_ids: list[int] = eos
        self.vocab_size: int = len(hf_tokenizer)
        self.special_token_ids: frozenset[int] = frozenset(hf_tokenizer.all_special_ids) | frozenset(
            getattr(hf_tokenizer, "added_tokens_decoder", {}).keys()
        )
        self._byte_level = _is_byte_level(hf_tokenizer)
        self._text_cache: dict[int, str] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, config: Any = None, **kwargs: Any) -> HFTokenizer:
        """Load from a local folder. EOS ids gather the tokenizer's, config.json's and generation_config.json's."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True, **kwargs)
        return cls(tok, eos_ids_from(Path(path), config))

    # --- encode / decode --------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.hf.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (special tokens: their content)."""
        if token_id < 0 or token_id >= self.vocab_size:
            return b""
        piece: str | None = self.hf.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        if token_id in self.special_token_ids:
            return piece.encode()
        if self._byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
            return piece.encode()
        m = _BYTE_TOKEN.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode()  # SentencePiece marks spaces with U+2581

    def token_text(self, token_id: int) -> str:
        """One token's text as OpenAI's logprobs show it: a partial UTF-8 piece becomes `bytes:\\xe2\\x82`."""
        cached = self._text_cache.get(token_id)
        if cached is not None:
            return cached
        raw = self.token_bytes(token_id)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        if len(self._text_cache) < 1_000_000:
            self._text_cache[token_id] = text
        return text

    # --- chat ---------------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Render the model's own template (never a client's), then encode without adding specials twice."""
        if not self.has_chat_template:
            raise InvalidRequest(
                "This model has no chat template; use /v1/completions with a plain prompt instead.", param="model"
            )
        from jinja2 import TemplateError

        convo = [{**m, "content": flatten_content(m.get("content"))} for m in messages]
        try:
            text = self.hf.apply_chat_template(convo, add_generation_prompt=add_generation_prompt, tokenize=False)
        except TemplateError as e:  # e.g. the template's own raise_exception("roles must alternate")
            raise InvalidRequest(f"The messages do not fit this model's chat template: {e}", param="messages") from e
        return self.encode(str(text), add_special_tokens=False)

    # --- constrained decoding ---------------------------------------------------------------------

    def compile_grammar(self, spec: Any, salt: str | None = None, timeout_s: float = 5.0) -> Any:
        """Compile a GrammarSpec for this vocabulary (blocking, cached; raises GrammarError). See structured.py."""
        from llmaas.engine.structured import compile_grammar

        return compile_grammar(self, spec, salt, timeout_s)


def _is_byte_level(hf_tokenizer: Any) -> bool:
    """True when the backend decodes with GPT-2 style ByteLevel (SmolLM2, Llama 3, Qwen2, GPT-2)."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # noqa: BLE001 - an exotic backend: fall back to SentencePiece-style rendering
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", []) or []]
    return "ByteLevel" in kinds


def eos_ids_from(path: Path, config: Any = None) -> list[int]:
    """EOS ids named by generation_config.json and config.json (either may list several)."""
    ids: list[int] = []
    gen = path / "generation_config.json"
    if gen.is_file():
        try:
            ids += _as_id_list(json.loads(gen.read_text()).get("eos_token_id"))
        except (ValueError, OSError):
            pass
    if config is None and (path / "config.json").is_file():
        try:
            ids += _as_id_list(json.loads((path / "config.json").read_text()).get("eos_token_id"))
        except (ValueError, OSError):
            pass
    elif config is not None:
        ids += _as_id_list(getattr(config, "eos_token_id", None))
    return list(dict.fromkeys(ids))
