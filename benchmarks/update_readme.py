"""Put the benchmark results into README.md and the documentation's pages (docs/**/*.md):
every table between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` is replaced by
``benchmarks/results/NAME.md``. Their numbers are never typed by hand. (The site's build
does the same, docs/hooks/results.py, so the site is current even before this runs.)

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def update(readme: str) -> tuple[str, list[str]]:
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        source = RESULTS / f"{match['name']}.md"
        if not source.is_file():
            missing.append(str(source))
            return match.group(0)
        return match.group(1) + source.read_text() + match.group(4)

    return BLOCK.sub(fill, readme), missing


def main() -> int:
    missing: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        before = path.read_text()
        text, lacking = update(before)
        if text != before:
            path.write_text(text)
        missing.update(lacking)
    for name in sorted(missing):
        print(f"no results yet: {name} (run its benchmark)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
