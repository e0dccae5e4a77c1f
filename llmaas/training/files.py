"""Validation of fine-tuning JSONL files, line by line, with errors that name the line and the problem.

Supervised files take two formats, as OpenAI does: chat (`{"messages": [{"role", "content"}, ...]}` with at least
one assistant turn) and prompt/completion (`{"prompt": "...", "completion": "..."}`); both come out as a list of chat
messages, so the dataset code sees one shape. DPO files take OpenAI's preference format (`{"input": {"messages":
[...]}, "preferred_output": [assistant message], "non_preferred_output": [assistant message]}`), which comes out as
a `Preference` of two chat examples sharing their prompt. This module reads bytes; it knows nothing of storage or
tokenizers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmaas.unicode import lone_surrogate_path

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 1024 * 1024  # one example; longer lines are refused rather than parsed
MAX_MESSAGES = 1024
MIN_EXAMPLES = 1


class FileValidationError(ValueError):
    """A fine-tuning file is unusable. `line` is 1-based (None for whole-file problems)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.problem = message


@dataclass(frozen=True, slots=True)
class Example:
    messages: list[dict[str, str]]  # [{"role", "content"}], at least one assistant turn


@dataclass(frozen=True, slots=True)
class Preference:
    """One DPO row: the same prompt answered the preferred way and the non-preferred way (both end on the answer)."""

    preferred: Example
    non_preferred: Example


Row = Example | Preference
Method = Literal["supervised", "dpo"]


def _message(obj: Any, index: int, where: str = "messages") -> dict[str, str]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}[{index}] must be an object")
    role, content = obj.get("role"), obj.get("content")
    if role not in ROLES:
        raise ValueError(f"{where}[{index}].role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    if not isinstance(content, str):
        raise ValueError(f"{where}[{index}].content must be a string")
    extra = set(obj) - {"role", "content", "name", "weight"}
    if extra:
        raise ValueError(f"{where}[{index}] has unsupported keys: {', '.join(sorted(extra))[:80]}")
    return {"role": role, "content": content}


def parse_example(obj: Any) -> Example:
    """One decoded JSON line → Example; raises ValueError with a client-readable reason."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        if len(msgs) > MAX_MESSAGES:
            raise ValueError(f"'messages' has more than {MAX_MESSAGES} entries")
        messages = [_message(m, i) for i, m in enumerate(msgs)]
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("'messages' needs at least one assistant message")
        return Example(messages)
    if "prompt" in obj or "completion" in obj:
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("'prompt' and 'completion' must both be strings")
        if not completion:
            raise ValueError("'completion' must not be empty")
        return Example([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
    raise ValueError("expected a chat example ('messages') or a prompt/completion example ('prompt', 'completion')")


def _output(obj: dict[str, Any], key: str) -> dict[str, str]:
    side = obj.get(key)
    if not isinstance(side, list) or len(side) != 1:
        raise ValueError(f"'{key}' must be a list with one assistant message")
    message = _message(side[0], 0, key)
    if message["role"] != "assistant" or not message["content"]:
        raise ValueError(f"'{key}' must hold one non-empty assistant message")
    return message


def parse_preference(obj: Any) -> Preference:
    """One decoded JSON line of a DPO file → Preference; raises ValueError with a client-readable reason."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    prompt = obj.get("input")
    if not isinstance(prompt, dict) or not isinstance(prompt.get("messages"), list) or not prompt["messages"]:
        raise ValueError("'input' must be an object with a non-empty 'messages' list")
    if len(prompt["messages"]) > MAX_MESSAGES:
        raise ValueError(f"'input.messages' has more than {MAX_MESSAGES} entries")
    messages = [_message(m, i, "input.messages") for i, m in enumerate(prompt["messages"])]
    if messages[-1]["role"] == "assistant":
        raise ValueError("'input.messages' must not end with an assistant message (the outputs are the answers)")
    preferred, non_preferred = _output(obj, "preferred_output"), _output(obj, "non_preferred_output")
    return Preference(Example(messages + [preferred]), Example(messages + [non_preferred]))


PARSERS: dict[str, Callable[[Any], Row]] = {"supervised": parse_example, "dpo": parse_preference}


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines without holding more than one line (bounded) in memory."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from lines
        if len(buf) > MAX_LINE_BYTES:
            yield buf  # too long: let the parser refuse it with its line number
            buf = b""
    if buf:
        yield buf


def decode_line(raw: bytes, number: int) -> Any:
    """One JSONL line as JSON; FileValidationError naming line `number` when it is not UTF-8, not JSON, or holds a
    lone surrogate (an escape like \\ud800: not text, and no tokenizer takes it). Shared by every JSONL reader."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FileValidationError("not valid UTF-8", number) from None
    except json.JSONDecodeError as exc:
        raise FileValidationError(f"invalid JSON ({exc.msg})", number) from None
    bad = lone_surrogate_path(obj)
    if bad is not None:
        raise FileValidationError(f"{bad[:80]} contains a lone surrogate (not valid Unicode)", number)
    return obj


def parse_jsonl(chunks: Iterable[bytes], method: Method = "supervised") -> Iterator[Any]:
    """Every row of a JSONL byte stream (Examples, or Preferences for dpo); FileValidationError names the first bad line."""
    parse = PARSERS[method]
    count = 0
    for number, raw in enumerate(iter_lines(chunks), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            raise FileValidationError(f"line longer than {MAX_LINE_BYTES} bytes", number)
        obj = decode_line(raw, number)
        try:
            yield parse(obj)
        except ValueError as exc:
            raise FileValidationError(str(exc), number) from None
        count += 1
    if count < MIN_EXAMPLES:
        raise FileValidationError("the file contains no examples")


def validate_jsonl(chunks: Iterable[bytes], method: Method = "supervised") -> int:
    """Check a whole file; the number of examples, or FileValidationError."""
    return sum(1 for _ in parse_jsonl(chunks, method))


def load_examples(data: bytes) -> list[Example]:
    return list(parse_jsonl([data]))
