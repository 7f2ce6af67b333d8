"""Put the benchmark results into README.md: every table between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` is replaced by
``benchmarks/results/NAME.md``. The README's numbers are never typed by hand.

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
    path = ROOT / "README.md"
    text, missing = update(path.read_text())
    path.write_text(text)
    for name in missing:
        print(f"no results yet: {name} (run its benchmark)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
