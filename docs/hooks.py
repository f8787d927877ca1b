"""mkdocs hooks: the parts of the documentation generated from the package, so they
cannot drift from it.

- ``<!-- settings-tables -->`` (settings.md): one table per group of
  ``napari_dsp.settings.FIELDS``, the table the command line's flags, the widget's form
  and tooltips and ``Settings``' docstring are built from.
- ``<!-- cli-help -->`` (command-line.md): ``napari-dsp --help`` and
  ``napari-dsp segment --help`` as the installed command prints them.
"""

from __future__ import annotations

import dataclasses
import os


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def settings_tables() -> str:
    from napari_dsp.settings import FIELDS, GROUPS, Settings

    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    parts = []
    for group, what in GROUPS.items():
        parts += [
            f"### {group}",
            "",
            f"*{what}*",
            "",
            "| setting | flag | form label | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for name, spec in FIELDS.items():
            if spec.group != group:
                continue
            default = defaults[name]
            shown = spec.none_text if default is None and spec.none_text else repr(default)
            parts.append(
                f"| `{name}` | `{spec.flag}` | {_cell(spec.label or name)} | "
                f"`{_cell(shown)}` | {_cell(spec.help)} |"
            )
        parts.append("")
    return "\n".join(parts)


def cli_help() -> str:
    from napari_dsp.cli.parser import build_parser

    os.environ["COLUMNS"] = "90"  # argparse wraps at the terminal's width
    parser = build_parser()
    segment = next(
        action.choices["segment"]
        for action in parser._actions
        if getattr(action, "choices", None) and "segment" in action.choices
    )
    return "\n".join(
        [
            "```text",
            "$ napari-dsp --help",
            parser.format_help().rstrip(),
            "",
            "$ napari-dsp segment --help",
            segment.format_help().rstrip(),
            "```",
        ]
    )


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- settings-tables -->" in markdown:
        markdown = markdown.replace("<!-- settings-tables -->", settings_tables())
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", cli_help())
    return markdown
