"""MkDocs hook: the CLI reference, generated from the argparse parsers at build time.

One page per ``fcnx`` command (``reference/cli/NAME.md``), made from the command module's
own ``build_parser`` (the modules ``fcnx.runtime.cli.COMMANDS`` names), so a new command,
subcommand or flag is in the docs as soon as it is in the code; nobody writes these pages.
Building a parser is cheap by design (no TensorFlow, no engine is imported for it).

The nav entry ``reference/cli/index.md`` is expanded into the overview and one entry per
command, in ``COMMANDS`` order, and ``<!-- cli-commands -->`` in a page becomes the table of
commands (name, the extra it needs, its one-line help).
"""

from __future__ import annotations

import argparse
import html
import importlib
import posixpath
import re
import textwrap
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

INDEX = "reference/cli/index.md"
TABLE_MARKER = "<!-- cli-commands -->"
NAV_TITLE = "fcnx {name}"


def _commands() -> dict[str, tuple[str, str | None, str]]:
    from fcnx.runtime.cli import COMMANDS

    return COMMANDS


def _page(name: str) -> str:
    return f"reference/cli/{name}.md"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Put one nav entry per command where the nav names the CLI overview."""
    pages = [INDEX] + [{NAV_TITLE.format(name=name): _page(name)} for name in _commands()]

    def expand(items: list[Any]) -> bool:
        for i, item in enumerate(items):
            if isinstance(item, dict):
                ((title, value),) = item.items()
                if value == INDEX:
                    items[i] = {title: pages}
                    return True
                if isinstance(value, list) and expand(value):
                    return True
        return False

    if config.nav is not None and not expand(config.nav):
        raise ValueError(f"mkdocs.yml: the nav has no entry {INDEX!r} for the generated CLI reference")
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name, (module, extra, _) in _commands().items():
        parser = importlib.import_module(module).build_parser(f"fcnx {name}")
        files.append(File.generated(config, _page(name), content=render_command(name, parser, extra)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if TABLE_MARKER not in markdown:
        return markdown
    here = posixpath.dirname(page.file.src_uri)
    rows = ["| command | extra | what |", "|---|---|---|"]
    for name, (_, extra, text) in _commands().items():
        link = posixpath.relpath(_page(name), here or ".")
        rows.append(f"| [`fcnx {name}`]({link}) | {f'`{extra}`' if extra else '-'} | {_inline(text)} |")
    return markdown.replace(TABLE_MARKER, "\n".join(rows))


def render_command(name: str, parser: argparse.ArgumentParser, extra: str | None) -> str:
    lines = [f"# fcnx {name}", ""]
    lines += [
        "<!-- generated from the command's argparse parser by docs/hooks/cli_reference.py: edit the code -->",
        "",
    ]
    if extra:
        lines += [f'Needs the `{extra}` extra: `pip install "fcnx[{extra}]"`.', ""]
    lines += _render_parser(parser, level=2)
    return "\n".join(lines).rstrip() + "\n"


def _render_parser(parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = ["```text", parser.format_usage().strip(), "```", ""]
    lines += _description(parser.description or "")
    formatter = parser._get_formatter()
    subcommands: list[argparse.ArgumentParser] = []
    for group in parser._action_groups:
        rows = []
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for sub_name, sub_parser in action.choices.items():
                    rows.append((_code(sub_name), _inline(helps.get(sub_name, ""))))
                    subcommands.append(sub_parser)
                continue
            invocation = formatter._format_action_invocation(action)
            help_text = formatter._expand_help(action) if action.help else ""
            rows.append((_code(invocation), _inline(help_text)))
        if rows:
            lines += [f"{'#' * level} {group.title.capitalize() if group.title else 'Arguments'}", ""]
            lines += ["| argument | what |", "|---|---|"]
            lines += [f"| {flag} | {text} |" for flag, text in rows]
            lines.append("")
    for sub_parser in subcommands:
        lines += [f"{'#' * level} {sub_parser.prog}", ""]
        lines += _render_parser(sub_parser, level + 1)
    return lines


def _description(text: str) -> list[str]:
    """Prose paragraphs as prose; indented paragraphs (examples) as shell blocks."""
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip("\n")):
        if not paragraph.strip():
            continue
        if all(line.startswith("  ") for line in paragraph.splitlines()):
            lines += ["```bash", textwrap.dedent(paragraph), "```", ""]
        else:
            lines += [_inline(" ".join(paragraph.split())), ""]
    return lines


def _inline(text: str) -> str:
    """Plain text safe inside Markdown prose and table cells."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def _code(text: str) -> str:
    """Inline code that survives a table cell (a flag like ``--tile HxW|off`` has a pipe)."""
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"
