"""Fine-tuning file validation: both formats accepted, every problem named with its line."""

from __future__ import annotations

import pytest

from llmaas.training.files import FileValidationError, load_examples, validate_jsonl


def check(text: str) -> FileValidationError:
    with pytest.raises(FileValidationError) as info:
        validate_jsonl([text.encode()])
    return info.value


def test_chat_and_prompt_completion_formats() -> None:
    data = (
        b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n'
        b"\n"
        b'{"prompt": "p", "completion": "c"}\n'
    )
    examples = load_examples(data)
    assert len(examples) == 2
    assert examples[1].messages == [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    # streamed in arbitrary chunks, lines split across them
    assert validate_jsonl([data[i : i + 7] for i in range(0, len(data), 7)]) == 2


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ('{"messages": [{"role": "user", "content": "u"}]}', 1, "assistant"),
        ('{"prompt": "p", "completion": "c"}\nnot json', 2, "invalid JSON"),
        ('{"prompt": "p", "completion": "c"}\n{"messages": [{"role": "wizard", "content": "x"}]}', 2, "role"),
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}', 1, "content"),
        ('{"messages": []}', 1, "non-empty"),
        ('[1, 2]', 1, "JSON object"),
        ('{"text": "x"}', 1, "expected a chat example"),
        ('{"prompt": "p", "completion": ""}', 1, "completion"),
        ('{"prompt": "p", "completion": "c"}\n{"prompt": "a\\ud800", "completion": "c"}', 2, "prompt contains a lone surrogate"),
        ('{"messages": [{"role": "user", "content": "\\udfffx"}, {"role": "assistant", "content": "a"}]}', 1, "messages[0].content"),
    ],
)
def test_bad_lines_are_named(text: str, line: int, needle: str) -> None:
    err = check(text)
    assert err.line == line
    assert f"line {line}" in str(err) and needle in str(err)


def test_empty_file_and_bad_utf8() -> None:
    assert "no examples" in str(check("\n\n"))
    with pytest.raises(FileValidationError, match="UTF-8"):
        validate_jsonl([b'{"prompt": "\xff"}'])
