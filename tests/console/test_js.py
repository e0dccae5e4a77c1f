"""The console's JavaScript, run in real headless Chromium against a server with only the console's files.

Pure functions (JSONL checks, model ids, loss series, usage days, error wording, code snippets) are imported as
ES modules in the page; the sign-in page is checked for its error path when no API answers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.browser


def run(page: Any, base: str, module: str, body: str) -> Any:
    """Evaluate `body` (an async function body with `m` = the imported module) in the console's origin."""
    if not page.url.startswith(base):
        page.goto(f"{base}/console/favicon.svg")  # same origin, no app code running
    return page.evaluate(f"async () => {{ const m = await import('/console/js/{module}'); {body} }}")


def test_jsonl_checks_name_the_line(page: Any, static_console: str) -> None:
    text = "\n".join(
        [
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
            "",
            "not json",
            '{"messages": [{"role": "user", "content": "only a question"}]}',
            '{"prompt": "2+2", "completion": "4"}',
            '{"messages": [{"role": "robot", "content": "x"}]}',
            "[1, 2]",
            '{"messages": [{"role": "assistant", "content": "x", "extra": 1}]}',
            "",
        ]
    )
    out = run(page, static_console, "jsonl.js", f"return m.validateJsonl({text!r});")
    assert out["examples"] == 2
    lines = {e["line"]: e["message"] for e in out["errors"]}
    assert set(lines) == {3, 4, 6, 7, 8}
    assert "not valid JSON" in lines[3]
    assert "assistant" in lines[4]
    assert "role" in lines[6] and "robot" in lines[6]
    assert "object" in lines[7]
    assert "extra" in lines[8]
    utf8 = run(
        page,
        static_console,
        "jsonl.js",
        """
      const ok = m.decodeUtf8(new TextEncoder().encode('{"a": "é"}\\n'));
      const bad = m.decodeUtf8(new Uint8Array([123, 10, 34, 0xff, 34, 10]));
      return [ok, bad];""",
    )
    assert utf8 == [{"text": '{"a": "é"}\n'}, {"error": {"line": 2, "message": "not valid UTF-8"}}]
    empty = run(page, static_console, "jsonl.js", "return m.validateJsonl('\\n\\n');")
    assert empty["errors"] == [{"line": 0, "message": "the file is empty"}]


def test_fine_tuned_ids_and_model_cards(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "models.js",
        """
      return [m.parseFineTuned('ft:SmolLM2-135M-Instruct:default:my-bot:ftjob-abc'), m.parseFineTuned('tiny'),
              m.describeModel({id: 'e5', kind: 'embedding', max_model_len: 512, created: 1}),
              m.describeModel({id: 'ft:tiny:p:s:ftjob-1', parent: 'tiny'})];""",
    )
    assert out[0] == {"base": "SmolLM2-135M-Instruct", "project": "default", "suffix": "my-bot", "job": "ftjob-abc"}
    assert out[1] is None
    assert out[2]["kind"] == "embedding" and out[2]["contextLength"] == 512 and not out[2]["fineTuned"]
    assert out[3]["fineTuned"] and out[3]["base"] == "tiny" and out[3]["job"] == "ftjob-1" and out[3]["kind"] == "chat"


def test_loss_series_from_events(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "views/finetune.js",
        """
      return m.lossSeries([
        {data: {step: 1, total_steps: 4, train_loss: 2.0}}, {data: {step: 2, total_steps: 4, train_loss: 1.5}},
        {data: {epoch: 1, step: 2, train_loss: 1.7, valid_loss: 1.9}}, {message: 'no data'},
        {data: {step: 'x', train_loss: 1}}, {data: {step: 3, full_valid_loss: 1.2}}]);""",
    )
    assert out == {"train": [[1, 2.0], [2, 1.5]], "valid": [[2, 1.9], [3, 1.2]]}


def test_usage_days_are_filled(page: Any, static_console: str) -> None:
    day = 86400
    start, end = 20_000 * day, 20_003 * day
    out = run(
        page,
        static_console,
        "views/usage.js",
        f"""
      return m.dailyRows([{{group: '{_iso(20_001)}', requests: 2, prompt_tokens: 5, completion_tokens: 7, total_tokens: 12}}],
                         {start}, {end});""",
    )
    assert [r["day"] for r in out] == [_iso(20_000), _iso(20_001), _iso(20_002)]
    assert [r["total"] for r in out] == [0, 12, 0] and out[1]["requests"] == 2


def _iso(day: int) -> str:
    import datetime as dt

    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def test_errors_read_as_words(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "api.js",
        """
      return [m.describe(429, 'Rate limit reached', m.parseRetryAfter('12')), m.describe(401, '', null),
              m.describe(503, 'engine down', null), m.parseRetryAfter('soon'), m.parseRetryAfter('0')];""",
    )
    assert "Try again in 12 seconds" in out[0] and "Rate limit reached" in out[0]
    assert "API key was not accepted" in out[1]
    assert "HTTP 503" in out[2] and "engine down" in out[2]
    assert out[3] is None and out[4] == 0


def test_code_snippets_quote_and_never_hold_the_key(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "views/playground.js",
        """
      const body = {model: 'tiny', messages: [{role: 'user', content: "it's \\"quoted\\""}], temperature: 0.5, max_tokens: 9};
      return [m.curlSnippet(body), m.pythonSnippet(body)];""",
    )
    curl, python = out
    assert "$LLMAAS_API_KEY" in curl and "'\\''" in curl and '"include_usage": true' in curl
    assert 'os.environ["LLMAAS_API_KEY"]' in python and 'model="tiny"' in python and "max_tokens=9" in python
    compile(python, "snippet.py", "exec")  # the Python snippet is valid Python


def test_json_schema_box_and_snippets(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "views/playground.js",
        """
      const rf = m.responseFormat('{"type": "object", "properties": {"ok": {"type": "boolean", "default": true}}}');
      let bad = null;
      try { m.responseFormat('{"type": '); } catch (e) { bad = e.message; }
      const body = {model: 'tiny', messages: [{role: 'user', content: 'hi'}], temperature: 0, max_tokens: 9, response_format: rf};
      return [rf, bad, m.responseFormat('  '), m.pythonSnippet(body), m.curlSnippet(body), m.parsedText('{"ok": true}'), m.parsedText('nope')];""",
    )
    rf, bad, empty, python, curl, parsed, not_json = out
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["properties"]["ok"]["type"] == "boolean"
    assert "not valid JSON" in bad and empty is None
    assert "response_format=loads(" in python and '"json_schema"' in curl
    compile(python, "snippet.py", "exec")
    ns: dict[str, Any] = {}
    exec(python.split("client = ")[0], ns)  # the imports run; the schema round-trips through json's loads
    literal = python.split("response_format=loads(")[1].split("),\n")[0]
    assert json.loads(eval(literal)) == rf
    assert parsed.startswith("parsed: {") and not_json is None


def test_sign_in_without_an_api_shows_the_error(page: Any, static_console: str) -> None:
    page.goto(f"{static_console}/")
    key = page.get_by_label("API key")
    key.fill("sk-test")
    key.press("Enter")
    alert = page.locator(".signin [role=alert]")
    alert.wait_for()
    assert "Not found" in alert.inner_text()
    assert page.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    assert page.get_by_role("button", name="Sign in").is_enabled()
    # No form submits natively (that would put its fields in the URL), even one no view has wired up yet.
    page.evaluate("""() => { const f = document.createElement('form');
        const i = document.createElement('input'); i.name = 'prompt'; i.value = 'secret'; f.append(i);
        document.body.append(f); f.requestSubmit(); }""")
    page.wait_for_timeout(300)
    assert "secret" not in page.url


def test_charts_draw_series_and_whole_number_ticks(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "chart.js",
        """
      const line = m.lineChart([{name: 'train', class: 's1', points: [[1, 5.8], [2, 5.7], [3, 5.75]]},
                                {name: 'valid', class: 's2', points: []}], {label: 'Loss'});
      const bars = m.barChart([{label: 'a', values: [1, 0]}, {label: 'b', values: [0, 0]}],
                              {series: [{name: 'x'}, {name: 'y'}], integer: true});
      const empty = m.lineChart([{name: 'train', points: []}]);
      return {paths: line.querySelectorAll('path.line').length, d: line.querySelector('path').getAttribute('d'),
              label: line.getAttribute('aria-label'), ticks: [...bars.querySelectorAll('.grid text')].map(t => t.textContent),
              bars: bars.querySelectorAll('rect.bar').length, empty: empty.textContent};""",
    )
    assert out["paths"] == 1 and out["d"].count("L") == 2 and out["label"] == "Loss"
    assert out["ticks"] == ["0", "1"] and out["bars"] == 1
    assert "No data yet" in out["empty"]


def test_batches_view_helpers(page: Any, static_console: str) -> None:
    text = json.dumps("\n" + '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}')
    body = (
        f"return [m.endpointOf({text}), m.endpointOf('{{\"url\": \"/v1/images\"}}'), m.endpointOf('not json'), "
        "m.progress({total: 4, completed: 2, failed: 1}), m.progress({total: 0})];"
    )
    assert run(page, static_console, "views/batches.js", body) == ["/v1/embeddings", "", "", 0.75, 0]


def test_labeled_text_becomes_chat_data(page: Any, static_console: str) -> None:
    csv = (
        'text,label\n"well, I love it",positive\nawful,negative\n"multi\nline ""quoted""",positive\n,negative\nfine,\n'
    )
    out = run(
        page,
        static_console,
        "labeled.js",
        f"""
      const r = m.parseLabeled({csv!r}, 'data.csv');
      const j = m.parseLabeled('{{"text": "a", "label": "x"}}\\n{{"text": "b", "label": "y"}}\\nnot json\\n', 'd.jsonl');
      const many = Array.from({{length: 12}}, (_, i) => ({{text: 't' + i, label: i % 2 ? 'odd' : 'even'}}));
      return [r, j, m.labelCounts(r.rows), m.toChatJsonl(r.rows.slice(0, 1)), m.splitRows(many),
              m.parseLabeled('a,x\\nb,x\\n', 'one.csv').errors];""",
    )
    parsed, jsonl, counts, chat, split, one_label = out
    assert [r["text"] for r in parsed["rows"]] == ["well, I love it", "awful", 'multi\nline "quoted"']
    assert parsed["errors"] == [
        {"line": 6, "message": "the text is empty"},
        {"line": 7, "message": "the label is empty (expected text,label)"},
    ]
    assert [r["label"] for r in jsonl["rows"]] == ["x", "y"] and jsonl["errors"][0]["line"] == 3
    assert counts == [["positive", 2], ["negative", 1]]
    assert json.loads(chat) == {
        "messages": [{"role": "user", "content": "well, I love it"}, {"role": "assistant", "content": "positive"}]
    }
    assert (
        len(split["valid"]) == 2
        and {r["label"] for r in split["valid"]} == {"odd", "even"}
        and len(split["train"]) == 10
    )
    assert one_label == [{"line": 0, "message": "a classifier needs at least two different labels"}]


def test_confusion_matrix_of_the_newest_checkpoint(page: Any, static_console: str) -> None:
    out = run(
        page,
        static_console,
        "views/checkpoints.js",
        """
      return m.latestMatrix([{step_number: 9, metrics: {train_loss: 1}},
        {step_number: 6, metrics: {valid_confusion_matrix: {labels: ['a', 'b'], matrix: [[1, 0], [1, 1]]}}},
        {step_number: 3, metrics: {valid_confusion_matrix: {labels: ['a', 'b'], matrix: [[0, 1], [1, 0]]}}}]);""",
    )
    assert out == {"step": 6, "labels": ["a", "b"], "matrix": [[1, 0], [1, 1]]}
