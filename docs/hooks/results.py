"""MkDocs hook: the Results pages show what benchmarks/results/ holds, at build time.

Every block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in a page is
replaced by ``benchmarks/results/NAME.md`` (the benchmarks write those files; none of their
numbers is typed by hand) with the same code ``python benchmarks/update_readme.py`` uses
on the page sources. A block whose file does not exist yet keeps what the page says. The
plots and pictures of benchmarks/results/ are published under ``results/img/``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PICTURES = ("*.png", "*.jpg")

_spec = importlib.util.spec_from_file_location("update_readme", ROOT / "benchmarks" / "update_readme.py")
assert _spec is not None and _spec.loader is not None
update_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_readme)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for pattern in PICTURES:
        for picture in sorted(RESULTS.glob(pattern)):
            files.append(File.generated(config, f"results/img/{picture.name}", abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    filled, _ = update_readme.update(markdown)
    return filled
