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
        ("[1, 2]", 1, "JSON object"),
        ('{"text": "x"}', 1, "expected a chat example"),
        ('{"prompt": "p", "completion": ""}', 1, "completion"),
        (
            '{"prompt": "p", "completion": "c"}\n{"prompt": "a\\ud800", "completion": "c"}',
            2,
            "prompt contains a lone surrogate",
        ),
        (
            '{"messages": [{"role": "user", "content": "\\udfffx"}, {"role": "assistant", "content": "a"}]}',
            1,
            "messages[0].content",
        ),
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


PREF = '{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "good"}], "non_preferred_output": [{"role": "assistant", "content": "bad"}]}'


def test_preference_format_for_dpo() -> None:
    from llmaas.training.files import parse_jsonl

    (row,) = list(parse_jsonl([PREF.encode()], "dpo"))
    assert row.preferred.messages[-1] == {"role": "assistant", "content": "good"}
    assert row.non_preferred.messages[:-1] == [{"role": "user", "content": "q"}]
    with pytest.raises(FileValidationError, match="line 1: expected a chat example"):
        validate_jsonl([PREF.encode()])  # a preference file is not a supervised one


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (
            '{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}]}',
            "'non_preferred_output' must be a list",
        ),
        ('{"preferred_output": [], "non_preferred_output": []}', "'input' must be an object"),
        (
            '{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "user", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}',
            "'preferred_output' must hold one non-empty assistant",
        ),
        (
            '{"input": {"messages": [{"role": "assistant", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}',
            "must not end with an assistant",
        ),
        (
            '{"input": {"messages": [{"role": "user", "content": 1}]}, "preferred_output": [{"role": "assistant", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}',
            "input.messages[0].content must be a string",
        ),
    ],
)
def test_bad_preference_rows_name_their_line(row: str, needle: str) -> None:
    with pytest.raises(FileValidationError) as info:
        validate_jsonl([(PREF + "\n" + row + "\n").encode()], "dpo")
    assert info.value.line == 2 and needle in str(info.value), str(info.value)


def test_step_metrics_csv_rows() -> None:
    from llmaas.training.results import metrics_csv, step_rows

    events = [
        {"step": 1, "total_steps": 2, "epoch": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.1},
        {
            "step": 2,
            "total_steps": 2,
            "epoch": 1,
            "train_loss": 1.9,
            "train_mean_token_accuracy": 0.2,
        },  # lost to a dead worker
        {
            "step": 2,
            "total_steps": 2,
            "epoch": 1,
            "train_loss": 1.5,
            "train_mean_token_accuracy": 0.3,
        },  # trained again on resume
        {"epoch": 1, "step": 2, "train_loss": 1.7, "full_valid_loss": 1.6, "full_valid_mean_token_accuracy": 0.25},
    ]
    text = metrics_csv(step_rows(events)).decode()
    assert (
        text == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.0,0.1,,\n2,1.5,0.3,1.6,0.25\n"
    )
