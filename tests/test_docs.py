"""The documentation works: the Python examples of the README and the docs import what
exists, the layout page lists every module, the README fits on two screens and its links
land on pages of the site, and every command block marked runnable in the docs runs.

A runnable block is a ```bash block right after a line ``<!-- runnable -->`` (or
``<!-- runnable: slow -->``, run with --run-slow like the slow tests). The blocks of one
page run in order, in one fresh folder, each with ``bash -euo pipefail``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted(DOCS.rglob("*.md"))
LAYOUT_PAGE = DOCS / "design" / "layout.md"
README_MAX_LINES = 150

MARKER = re.compile(r"^<!-- runnable(?P<slow>: slow)? -->$", re.M)  # a line of its own
RUNNABLE = re.compile(r"^<!-- runnable(?P<slow>: slow)? -->\n```bash\n(?P<code>.*?)^```", re.S | re.M)
SECONDS = {False: 120, True: 900}  # per block


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _name(page: Path) -> str:
    return str(page.relative_to(DOCS))


def _blocks(page: Path) -> list[tuple[bool, str]]:
    text = _text(page)
    return [(bool(m["slow"]), m["code"]) for m in RUNNABLE.finditer(text)]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_docs_import_exactly_what_exists() -> None:
    lines = [
        line.strip()
        for text in [README, *map(_text, PAGES)]
        for block in _python_blocks(text)
        for line in block.splitlines()
        if re.match(r"\s*(from fcnx[\w.]* import|import fcnx)", line)
    ]
    assert any("from fcnx.runtime import" in line for line in lines), lines
    for line in lines:
        exec(line, {})  # an ImportError names the line


def test_the_layout_page_lists_every_module() -> None:
    layout = _text(LAYOUT_PAGE)
    missing = []
    for folder in ("train", "export", "runtime"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if path.name == "__init__.py" and relative.parent.name != "runtime":
                continue
            if "commands" in relative.parts:
                continue
            if not re.search(rf"(^|\s){re.escape(path.name)}\s", layout, flags=re.M):
                missing.append(str(relative))
    assert not missing, f"{LAYOUT_PAGE.relative_to(ROOT)} does not list: {', '.join(missing)}"


def test_the_readme_starts_with_the_two_commands_and_fits_on_two_screens() -> None:
    lines = README.splitlines()
    assert len(lines) <= README_MAX_LINES, f"the README has {len(lines)} lines; at most {README_MAX_LINES}"
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first is not None
    commands = [line for line in first.group(1).splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[0].endswith("fcnx demo"), commands
    assert commands[1].endswith("python -m pytest"), commands


def _slug(heading: str) -> str:
    """A heading's anchor as MkDocs' toc extension makes it (its default slugify)."""
    text = re.sub(r"<[^>]+>|`", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", _text(page), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_readme_link_lands_on_a_page_of_the_site() -> None:
    links = [link for link in re.findall(r"\]\(([^)\s]+)\)", README) if "://" not in link]
    into_docs = [link for link in links if link.startswith("docs/")]
    assert len(into_docs) >= 10, into_docs
    wrong = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if not target.is_file():
            wrong.append(f"{link}: no such file")
        elif path.startswith("docs/") and target.suffix != ".md":
            wrong.append(f"{link}: not a page of the site")
        elif anchor and anchor not in _anchors(target):
            wrong.append(f"{link}: {path} has no heading #{anchor}")
    assert not wrong, wrong


def test_every_runnable_marker_is_followed_by_a_bash_block() -> None:
    for page in PAGES:
        text = _text(page)
        assert len(MARKER.findall(text)) == len(RUNNABLE.findall(text)), (
            f"{_name(page)}: a runnable marker must be the line right before a ```bash block"
        )
    assert any(not slow for page in PAGES for slow, _ in _blocks(page))


def _run(code: str, folder: Path, seconds: int) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this fcnx, this python
    env.pop("FCNX_DEBUG", None)
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: whatever it started ends with it
    )
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        output = f"(timed out after {seconds} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"exit {process.returncode}:\n{code}\n--- output ---\n{output[-6000:]}"


def _pages_with(slow: bool) -> list[Path]:
    return [page for page in PAGES if any(block_slow == slow for block_slow, _ in _blocks(page))]


@pytest.mark.parametrize("page", _pages_with(slow=False), ids=_name)
def test_the_runnable_blocks_run(page: Path, tmp_path: Path) -> None:
    for slow, code in _blocks(page):
        if not slow:
            _run(code, tmp_path, SECONDS[False])


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with(slow=True), ids=_name)
def test_the_slow_runnable_blocks_run(page: Path, tmp_path: Path) -> None:
    for slow, code in _blocks(page):
        _run(code, tmp_path, SECONDS[slow])
