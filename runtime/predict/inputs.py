"""What ``fcnx predict`` runs on: folders (recursive), globs and text files of paths,
each file paired with the relative path its outputs get under ``-o OUT``.

- a folder: every image file below it, relative to the folder;
- a glob (``'scans/**/*.tif'``): the matching files, relative to the glob's fixed part;
- an image file: itself, by name;
- any other file: a list of paths, one per line (``#`` comments and blank lines
  skipped; relative entries are relative to the list's folder), relative to the
  entries' common folder.

Files that turn out unreadable are not errors here: the pipeline records them and
goes on. Only an input that names nothing at all is an error.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputFile:
    path: str  # as given / found
    relative: str  # POSIX relative path (with its suffix) that names its outputs


Task = tuple[InputFile, list[Path]]  # an input and the output files it gets


def _is_glob(spec: str) -> bool:
    return glob.has_magic(spec)


def _glob_base(spec: str) -> Path:
    parts = PurePath(spec).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _folder(folder: Path) -> list[InputFile]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                path = Path(root) / name
                found.append(InputFile(str(path), _relative(path, folder)))
    return found


def _list_file(listing: Path) -> list[InputFile]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(
            f"{listing}: not an image type fcnx reads ({', '.join(IMAGE_SUFFIXES)}) and not a text file of paths"
        ) from None
    paths = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            path = Path(entry)
            paths.append(path if path.is_absolute() else listing.parent / path)
    if not paths:
        raise ValueError(f"{listing}: a list of image paths with no entries")
    base = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
    return [InputFile(str(p), _relative(Path(os.path.abspath(p)), base)) for p in paths]


def collect_inputs(specs: Sequence[str]) -> list[InputFile]:
    """All inputs in the order given (each folder/glob sorted); the same file twice is kept once."""
    found: list[InputFile] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = _folder(path)
            if not files:
                raise ValueError(f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        elif path.is_file():
            is_image = path.suffix.lower() in IMAGE_SUFFIXES
            files = [InputFile(str(path), path.name)] if is_image else _list_file(path)
        elif _is_glob(spec):
            base = _glob_base(spec)
            matches = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"{spec}: the pattern matches no files")
            files = [InputFile(p, _relative(Path(p), base)) for p in matches]
        else:
            raise ValueError(f"{spec}: no such file, folder or matching pattern")
        found.extend(files)
    seen: set[str] = set()
    unique = []
    for item in found:
        key = os.path.abspath(item.path)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique
