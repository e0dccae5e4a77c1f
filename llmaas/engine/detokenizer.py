"""Incremental detokenization of one sequence: token ids in, UTF-8-complete text out, stop strings cut.

Each call decodes only a small window: the few tokens before the unread ones (so that tokenizers which strip or
merge at the start of a decode see the same context twice) and the new ones, and emits the difference (vLLM's
`detokenize_incrementally`, TGI's `decode_token`). A decode that ends in U+FFFD is a character split across tokens:
it is held until the next token completes it. Text that could still become a stop string is held back too.

It does not decide when a sequence ends (except by reporting a stop string) and never looks at the whole output.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmaas.engine.protocol import Tokenizer
from llmaas.engine.types import SamplingParams

_CONTEXT_TOKENS = 5  # tokens decoded before the unread ones (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET)
_MAX_PENDING = 16  # a real character needs at most 4 byte tokens; past this, invalid bytes are emitted as U+FFFD
_KEEP_PENDING = 3  # ...except the last 3, which may still start a valid character
_TRIM_AT = 1024  # drop consumed tokens from the buffer now and then, so memory stays bounded too


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int], params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = params.skip_special_tokens
        self.stop = [s for s in params.stop if s]
        self._max_hold = max((len(s) for s in self.stop), default=1) - 1
        self._tokens = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # start of the context window
        self._read_offset = len(self._tokens)  # first token whose text was not emitted yet
        self._held = ""  # decoded text not yet returned: a possible stop-string prefix
        self.stopped = False

    def add(self, token_ids: Sequence[int]) -> tuple[str, bool]:
        """New text for these tokens and whether a stop string matched (the text is then cut before it)."""
        if self.stopped:
            return "", True
        self._tokens.extend(token_ids)
        return self._release(self._held + self._decode_new(final=False))

    def flush(self) -> str:
        """Everything held back, when the sequence ends for another reason (EOS, length, abort)."""
        if self.stopped:
            return ""
        text, _ = self._release(self._held + self._decode_new(final=True), final=True)
        return text

    # --- internals ----------------------------------------------------------------------------------

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self._tokens[start:end], skip_special_tokens=self.skip_special_tokens)

    def _decode_new(self, final: bool) -> str:
        end = len(self._tokens)
        if end == self._read_offset:
            return ""
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset, end)
        if not final and new_text.endswith("\ufffd"):
            if end - self._read_offset <= _MAX_PENDING:
                return ""  # a split character: wait for the rest of its bytes
            end -= _KEEP_PENDING
            new_text = self._decode(self._prefix_offset, end)
        delta = new_text[len(prefix_text) :]
        self._prefix_offset, self._read_offset = self._read_offset, end
        if self._prefix_offset > _TRIM_AT:
            del self._tokens[: self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0
        return delta

    def _release(self, text: str, final: bool = False) -> tuple[str, bool]:
        """Cut at the earliest stop string; otherwise hold back the longest tail that could begin one."""
        self._held = ""
        if not self.stop:
            return text, False
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut], True
        if final:
            return text, False
        hold = 0
        for n in range(min(self._max_hold, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                hold = n
                break
        if hold:
            self._held = text[-hold:]
            return text[:-hold], False
        return text, False
