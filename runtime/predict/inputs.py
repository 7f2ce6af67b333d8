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
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from ..images import IMAGE_SUFFIXES
from ..names import shown


@dataclass(frozen=True)
class InputFile:
    path: str  # as given / found (an HDF5 dataset: FILE.h5:/path)
    relative: str  # POSIX relative path (with its suffix) that names its outputs
    array: bool = False  # a stack, volume or huge plane (runtime/arrays), not a 2D image file


ARRAY_FOLDERS = (".zarr", ".n5")  # a folder with this suffix is one array input, never walked
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
_HDF5_SPEC = re.compile(r"(.+\.(?:h5|hdf5|he5)):(/.*)", re.IGNORECASE | re.DOTALL)


def _is_array_file(path: Path) -> bool:
    """An HDF5 file, or a TIFF that is a stack or a huge plane (its header says so)."""
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    from ..arrays.readers import is_array_input
    from ..backends.base import MissingExtra

    try:
        return is_array_input(path)
    except MissingExtra:  # a stack, but tifffile is missing: the input fails, saying so
        return True
    except Exception:  # not a readable TIFF: the image path reports it, one line, the run goes on
        return False


def _input(path: Path, relative: str) -> InputFile:
    return InputFile(str(path), relative, _is_array_file(path))


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


FILE_TYPES = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def not_a_file(path: str | Path) -> str | None:
    """Why ``path`` (links followed) is not a regular file fcnx can read without blocking
    (a FIFO would block its reader forever), or None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({FILE_TYPES.get(stat.S_IFMT(mode), 'a special file')})"


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
        for name in [d for d in dirs if d.lower().endswith(ARRAY_FOLDERS)]:  # one input each
            dirs.remove(name)
            path = Path(root) / name
            found.append(InputFile(str(path), _relative(path, folder), array=True))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.suffix.lower() not in (*IMAGE_SUFFIXES, *HDF5_SUFFIXES):
                skipped.append(f"{path}: not an image type fcnx reads ({path.suffix or 'no suffix'})")
            elif problem := not_a_file(path):
                skipped.append(f"{path}: {problem}")
            else:
                found.append(_input(path, _relative(path, folder)))
    return found


def _list_file(listing: Path) -> list[InputFile]:
    """Paths one per line, in the bytes the OS has (a name that is not UTF-8 is kept as
    such); only ``\\n`` ends a line (a name may hold U+2028 or U+0085)."""
    data = listing.read_bytes()
    if b"\0" in data:
        raise ValueError(
            f"{shown(listing)}: not an image type fcnx reads ({', '.join(IMAGE_SUFFIXES)}) and not a text "
            "file of paths"
        )
    paths = []
    for line in data.split(b"\n"):
        entry = os.fsdecode(line.rstrip(b"\r")).strip(" \t")
        if entry and not entry.startswith("#"):
            path = Path(entry)
            paths.append(path if path.is_absolute() else listing.parent / path)
    if not paths:
        raise ValueError(f"{shown(listing)}: a list of image paths with no entries")
    base = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
    return [_input(p, _relative(Path(os.path.abspath(p)), base)) for p in paths]


def collect_inputs(specs: Sequence[str]) -> Inputs:
    """All inputs in the order given (each folder/glob sorted); the same file twice is kept once."""
    inputs = Inputs()
    found: list[InputFile] = []
    for spec in specs:
        path = Path(spec)
        hdf5 = _HDF5_SPEC.fullmatch(spec)
        if hdf5 and not path.exists() and Path(hdf5[1]).is_file():  # FILE.h5:/dataset
            files = [InputFile(spec, f"{Path(hdf5[1]).name}:{hdf5[2]}", array=True)]
        elif path.is_dir() and path.name.lower().endswith(ARRAY_FOLDERS):  # a Zarr/N5 array or group
            files = [InputFile(str(path), path.name, array=True)]
            inputs.trees.append(path.resolve())  # its group is never written into
        elif path.is_dir():
            files = _folder(path, inputs.skipped)
            if not files:
                raise ValueError(
                    f"{shown(spec)}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"
                )
            inputs.trees.append(path.resolve())
        elif path.is_file():
            is_image = path.suffix.lower() in (*IMAGE_SUFFIXES, *HDF5_SUFFIXES)
            files = [_input(path, path.name)] if is_image else _list_file(path)
        elif path.exists():  # a FIFO, socket or device: never opened (a FIFO blocks its reader)
            inputs.skipped.append(f"{spec}: {not_a_file(path)}")
            files = []
        elif _is_glob(spec):
            base = _glob_base(spec)
            matches = []
            for match in sorted(glob.glob(spec, recursive=True)):
                if Path(match).is_dir():
                    continue
                if problem := not_a_file(match):
                    inputs.skipped.append(f"{match}: {problem}")
                else:
                    matches.append(match)
            if not matches:
                raise ValueError(f"{shown(spec)}: the pattern matches no files")
            files = [_input(Path(p), _relative(Path(p), base)) for p in matches]
            inputs.trees.append(base.resolve())
        else:
            raise ValueError(f"{shown(spec)}: no such file, folder or matching pattern")
        found.extend(files)
    if not found:
        raise ValueError(f"no inputs to segment: {'; '.join(shown(s) for s in inputs.skipped)}")
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
                f"-o {shown(out)} {relation} the input folder {shown(tree)}: outputs need a folder of their own "
                "(fcnx never writes into its inputs)"
            )
    sources = {Path(item.path).resolve(): item.path for item in inputs.files}
    for parent in {source.parent for source in sources}:
        if target == parent:
            raise ValueError(
                f"-o {shown(out)} is the folder of the input images: outputs need a folder of their own "
                "(fcnx never writes into its inputs)"
            )
    for path in outputs:
        if path.resolve() in sources:
            raise ValueError(
                f"{shown(path)}: would replace the input {shown(sources[path.resolve()])}; choose another -o"
            )
