"""The user's images, split so that no image both calibrates and judges.

INT8 calibration sees the calibration images; the parity gates, the quality budget and
the speed measurements see only the judging images. The split is seeded (the same DIR
and seed give the same split on every machine), or the calibration images come from
their own folder (``--calib DIR2``: then every image of DIR judges). The two sets are
written as folders of symbolic links (``image/``, and ``label/`` where DIR has labels)
in the deploy cache: the user's files are read, never written or copied.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from fcnx.runtime.card import sha256_file
from fcnx.runtime.images import dataset_images, list_images

MIN_JUDGE = 2  # images, at least, to judge on


@dataclass(frozen=True)
class Split:
    calib: list[Path]  # image files
    judge: list[Path]
    labels: dict[str, Path]  # judging image name -> its label file
    seed: int

    def digest(self) -> str:
        """What the exports and measurements depend on: which files did what (by name and bytes)."""
        sha = hashlib.sha256(f"seed {self.seed}\n".encode())
        for role, files in (("calib", self.calib), ("judge", self.judge)):
            for path in files:
                sha.update(f"{role} {path.name} {sha256_file(path)}\n".encode())
        for name in sorted(self.labels):
            sha.update(f"label {name} {sha256_file(self.labels[name])}\n".encode())
        return sha.hexdigest()

    def record(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "calibration": [str(p) for p in self.calib],
            "judging": [str(p) for p in self.judge],
            "judging_labels": len(self.labels),
        }

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``folder/calib/image``, ``folder/judge/image`` (+ ``label``) as symbolic links;
        returns the two dataset folders."""
        calib, judge = folder / "calib", folder / "judge"
        _links(calib / "image", self.calib)
        _links(judge / "image", self.judge)
        if self.labels:
            _links(judge / "label", [self.labels[p.name] for p in self.judge if p.name in self.labels])
        return calib, judge


def _links(folder: Path, files: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        link = folder / path.name
        if os.path.lexists(link):
            if link.resolve() == path.resolve():
                continue
            link.unlink()
        os.symlink(path.resolve(), link)


def _labels_of(data: Path, images: list[Path]) -> dict[str, Path]:
    folder = data / "label"
    if not folder.is_dir():
        return {}
    by_stem = {p.stem: p for p in list_images(folder)}
    return {p.name: by_stem[p.stem] for p in images if p.stem in by_stem}


def split_images(data: str | Path, calib: str | Path | None, calib_count: int, seed: int) -> Split:
    """The seeded split of ``data`` (``calib_count`` images, at most half, calibrate; the
    rest judge), or ``calib``'s images calibrating and all of ``data``'s judging."""
    data = Path(data)
    images = dataset_images(data, "images to deploy on")
    if calib is not None:
        calib_files = dataset_images(calib, "calibration images")[:calib_count]
        overlap = {p.resolve() for p in calib_files} & {p.resolve() for p in images}
        if overlap:
            raise ValueError(
                f"{calib}: {len(overlap)} calibration images are also in {data} (they must differ)"
            )
        judge = images
    else:
        if len(images) < 2 * MIN_JUDGE:
            raise ValueError(
                f"{data}: {len(images)} images; a deploy needs at least {2 * MIN_JUDGE} (half calibrate INT8, "
                "half judge), or --calib DIR2 with calibration images of their own"
            )
        order = list(images)
        random.Random(seed).shuffle(order)
        count = min(calib_count, len(order) // 2)
        calib_files, judge = sorted(order[:count]), sorted(order[count:])
    if len(judge) < MIN_JUDGE - (calib is not None):
        raise ValueError(f"{data}: too few images to judge on")
    return Split(calib_files, judge, _labels_of(data, judge), seed)
