"""What ``fcnx predict`` runs on: folders (recursive), globs and text files of paths,
each file paired with the relative path its outputs get under ``-o OUT``.

- a folder: every image file below it, relative to the folder;
- a glob (``'scans/**/*.tif'``): the matching files, relative to the glob's fixed part;
- an image file: itself, by name;
- any other file: a list of paths, one per line (``#`` comments and blank lines
  skipped; relative entries are relative to the list's folder), relative to the
  entries' common folder.

Files that turn out unreadable are not errors here: the pipeline records them and
goes on. Only an input that names nothing at all is an error. What a folder holds but
fcnx does not take (other file types, folders it cannot read, linked folders, which
are not followed) is listed in ``Inputs.skipped`` so the summary can name it; hidden
entries (``.name``) are left out silently.

``check_output_folder`` refuses an output folder that is, is inside, or contains an
input folder (links resolved), before anything is written: inputs are never written.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from ..images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputFile:
    path: str  # as given / found
    relative: str  # POSIX relative path (with its suffix) that names its outputs


Task = tuple[InputFile, list[Path]]  # an input and the output files it gets


@dataclass
class Inputs:
    files: list[InputFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "PATH: why", for entries fcnx did not take
    trees: list[Path] = field(default_factory=list)  # resolved folders and glob bases searched (recursively)


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


def _folder(folder: Path, skipped: list[str]) -> list[InputFile]:
    found = []

    def unreadable(error: OSError) -> None:
        skipped.append(f"{error.filename}: folder not readable ({error.strerror})")

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        for name in sorted(dirs):
            if not name.startswith(".") and os.path.islink(os.path.join(root, name)):
                skipped.append(f"{os.path.join(root, name)}: a linked folder (not followed)")
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d))
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(InputFile(str(path), _relative(path, folder)))
            else:
                skipped.append(f"{path}: not an image type fcnx reads ({path.suffix or 'no suffix'})")
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


def collect_inputs(specs: Sequence[str]) -> Inputs:
    """All inputs in the order given (each folder/glob sorted); the same file twice is kept once."""
    inputs = Inputs()
    found: list[InputFile] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = _folder(path, inputs.skipped)
            if not files:
                raise ValueError(f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            inputs.trees.append(path.resolve())
        elif path.is_file():
            is_image = path.suffix.lower() in IMAGE_SUFFIXES
            files = [InputFile(str(path), path.name)] if is_image else _list_file(path)
        elif _is_glob(spec):
            base = _glob_base(spec)
            matches = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"{spec}: the pattern matches no files")
            files = [InputFile(p, _relative(Path(p), base)) for p in matches]
            inputs.trees.append(base.resolve())
        else:
            raise ValueError(f"{spec}: no such file, folder or matching pattern")
        found.extend(files)
    seen: set[str] = set()
    for item in found:
        key = os.path.abspath(item.path)
        if key not in seen:
            seen.add(key)
            inputs.files.append(item)
    return inputs


def check_outputs(out: Path, inputs: Inputs, outputs: list[Path]) -> None:
    """Before anything is written: refuse an output folder that is, is inside, or contains
    a folder the inputs were searched in, or that holds their own folder (links resolved),
    and any output that would land on an input file. Masks never replace images, and a
    rerun never reads its own masks back."""
    target = out.resolve()
    for tree in inputs.trees:
        if target == tree or tree in target.parents or target in tree.parents:
            relation = "is" if target == tree else "is inside" if tree in target.parents else "contains"
            raise ValueError(
                f"-o {out} {relation} the input folder {tree}: outputs need a folder of their own "
                "(fcnx never writes into its inputs)"
            )
    sources = {Path(item.path).resolve(): item.path for item in inputs.files}
    for parent in {source.parent for source in sources}:
        if target == parent:
            raise ValueError(
                f"-o {out} is the folder of the input images: outputs need a folder of their own "
                "(fcnx never writes into its inputs)"
            )
    for path in outputs:
        if path.resolve() in sources:
            raise ValueError(f"{path}: would replace the input {sources[path.resolve()]}; choose another -o")
