"""MkDocs hook: lets mkdocstrings find the ``fcnx`` packages by reading their source.

The distribution maps ``fcnx.runtime``, ``fcnx.export`` and ``fcnx.train`` onto the folders
``runtime/``, ``export/`` and ``train/`` (pyproject's ``package-dir``), so no folder is called
``fcnx`` and griffe, which reads source files instead of importing them, finds nothing. This
hook builds a throw-away ``fcnx/`` folder of links to the three and gives it to the Python
handler as its search path; nothing is imported.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "export", "train")  # fcnx.<name> is the folder <name>/ (pyproject.toml)
_views: list[Path] = []


@event_priority(100)  # before mkdocstrings' own on_config, which makes the handler
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    view = Path(tempfile.mkdtemp(prefix="fcnx-docs-api-"))
    _views.append(view)
    (view / "fcnx").mkdir()
    for name in PACKAGES:
        (view / "fcnx" / name).symlink_to(ROOT / name, target_is_directory=True)
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [str(view)]
    return config


def on_shutdown() -> None:
    while _views:
        shutil.rmtree(_views.pop(), ignore_errors=True)
