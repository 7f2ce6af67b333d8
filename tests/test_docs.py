"""The README is the user's manual: its Python examples import what exists, and its
layout section lists every module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_imports_exactly_what_exists() -> None:
    lines = [
        line.strip()
        for block in _python_blocks()
        for line in block.splitlines()
        if re.match(r"\s*(from fcnx[\w.]* import|import fcnx)", line)
    ]
    assert any("from fcnx.runtime import" in line for line in lines), lines
    for line in lines:
        exec(line, {})  # an ImportError names the line


def test_the_layout_section_lists_every_module() -> None:
    layout = README[README.index("## Layout") :]
    layout = layout[: layout.index("\n## ")]
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
    assert not missing, f"the README's layout section does not list: {', '.join(missing)}"
