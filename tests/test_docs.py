"""Where a user looks first says the same as the documentation: ``napari-dsp --help``,
the widget's tooltips (tests/_qt/test_form.py) and the settings page are generated from
one settings table; the README keeps its two set-up commands, and CI runs the README's
test command."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from napari_dsp.cli.parser import build_parser
from napari_dsp.settings import FIELDS, Settings

ROOT = Path(__file__).resolve().parents[1]


def _words(text: str) -> str:
    return " ".join(text.split())


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_and_settings_page_say_what_the_settings_table_says(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100000")  # one line per flag: compare the words
    segment = next(
        action.choices["segment"]
        for action in build_parser()._actions
        if getattr(action, "choices", None) and "segment" in action.choices
    )
    help_text = _words(segment.format_help())
    page = _words(_hooks().settings_tables())
    for name, field in FIELDS.items():
        assert _words(field.help) in help_text, name
        assert _words(field.help).replace("|", "\\|") in page, name
        assert f"`{field.flag}`" in page


def test_settings_docstring_documents_every_setting():
    for name in FIELDS:
        assert re.search(rf"^    {name} : ", Settings.__doc__, flags=re.MULTILINE), name


def test_every_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages == listed


def test_readme_keeps_its_two_set_up_commands_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 220
    assert "pip install . && napari-dsp demo" in readme
    assert "bash .ci/run" in readme
    test_command = re.search(
        r'`(xvfb-run -a -s "-screen 0 1280x1024x24" python3 -m pytest)`', readme
    )
    assert test_command, "the README names the test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.group(1).replace("python3", "$PY") in ci
    assert "mkdocs build --strict" in ci
