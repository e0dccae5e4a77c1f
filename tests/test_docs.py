"""docs/ covers the code (STYLE habit 15): every setting, CLI command, metric and error code appears in docs/*.md.

Each test fails with the exact list of what is missing. Most reference tables are generated: run
`python docs/generate.py` after adding a setting, command, metric or error, then write the prose around it.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def docs_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


def missing_from_docs(names: list[str]) -> list[str]:
    text = docs_text()
    return [n for n in names if f"`{n}`" not in text and not re.search(rf"\b{re.escape(n)}\b", text)]


def test_every_setting_is_documented() -> None:
    from llmaas.config import Limits, ModelSpec, Settings

    names = list(Settings.model_fields) + list(ModelSpec.model_fields) + list(Limits.model_fields)
    text = docs_text()
    missing = [n for n in names if f"`{n}`" not in text]
    missing += [f"LLMAAS_{n.upper()}" for n in Settings.model_fields if f"LLMAAS_{n.upper()}" not in text]
    assert not missing, f"settings missing from docs/ (run `python docs/generate.py`): {missing}"


def test_every_cli_command_is_documented() -> None:
    from llmaas.cli import cli

    commands: list[str] = []

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                commands.append(f"{path} {name}")
                walk(sub, f"{path} {name}")

    walk(cli, "llmaas")
    text = docs_text()
    missing = [c for c in commands if f"`{c}`" not in text]
    assert not missing, f"CLI commands missing from docs/ (run `python docs/generate.py`): {missing}"


def test_every_metric_is_documented() -> None:
    from llmaas import metrics

    missing = [n for n in metrics.metric_names() if f"`{n}`" not in docs_text()]
    assert not missing, f"metrics missing from docs/operations.md (run `python docs/generate.py`): {missing}"


def test_every_error_code_is_documented() -> None:
    from llmaas import errors

    codes = sorted(
        {
            cls.code
            for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.LlmaasError) and cls.code
        }
        | {"invalid_host"}
    )
    missing = [c for c in codes if f"`{c}`" not in docs_text()]
    assert not missing, f"error codes missing from docs/api.md (run `python docs/generate.py`): {missing}"


def test_relative_links_resolve() -> None:
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, f"broken links in docs/: {broken}"


def test_quickstart_uses_the_readme_commands() -> None:
    quickstart = (DOCS / "quickstart.md").read_text()
    for command in ("bash scripts/install.sh", "python3 -m pytest", "llmaas serve"):
        assert command in quickstart, f"docs/quickstart.md lacks `{command}`"


def test_python_examples_compile() -> None:
    bad = []
    for page in sorted(DOCS.glob("*.md")):
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)):
            try:
                compile(block, f"{page.name}[{i}]", "exec")
            except SyntaxError as exc:
                bad.append(f"{page.name} block {i}: {exc}")
    assert not bad, f"python examples in docs/ that do not compile: {bad}"
