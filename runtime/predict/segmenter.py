"""``Segmenter``: any list of images in, one mask per image out, at each image's own size.

Every image is planned, run as pieces, and assembled:

1. ``plan``: to the model's dtype and channels, then one of two plans.
   - ``Tiled`` (the default for an image larger than a tile, and for every image on a
     fixed-size model): the image at full resolution as tiles of the model's input
     size (``tile``, default the model's own), overlapping by ``overlap`` pixels
     (tiling.py); outputs are blended (probabilities) or stitched (mask-only models).
   - ``Prepared`` (a whole image): a dynamic-size model gets it at its own resolution,
     mirror-padded to the stride multiple; with ``tile="off"`` or an explicit ``fit``
     a fixed-size model gets it resized to its input ("resize") or scaled down only
     if needed and mirror-padded ("pad").
2. ``stream``: the pieces (tiles, or the whole image; with ``tta="flip"`` each piece
   and its flips) of consecutive images fill the same batches, up to the backend's
   limit (a fixed-batch model gets its last batch padded), run in order through the
   backend.
3. assemble: tiles blended in row bands (finished rows are final as soon as no later
   tile touches them), whole images cropped and resized back (nearest for masks,
   linear for probabilities) to the image's own size.

A result never depends on which other images or tiles shared its batch: batches only
ever hold pieces of one shape, and padding is per image. An inference failure costs
one image: the batches in flight are retried image by image, and the image that still
fails comes out as its exception while the stream goes on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from ..arrays.source import ArraySource
from ..backends.base import Backend, native_size
from ..images import mirror_pad, pad_to_multiple, to_channels, to_uint8
from ..intensity import Note
from .plans import Output, Plan, Prepared, Tiled, Windowed, mask_from_probs, resize, restore
from .tiling import (
    TTA_FLIPS,
    Blender,
    Rows,
    TileGrid,
    choose_tiling,
    flip,
)
from .windows import plan_window, window_pieces

FITS = ("auto", "resize", "pad")
TTAS = tuple(TTA_FLIPS)
DEFAULT_BATCH = 8
DYNAMIC_TILE = (512, 512)  # a dynamic-size model's tile when its card names no size
K = TypeVar("K")


@dataclass(eq=False)
class _Image(Generic[K]):
    """One image in the stream: its plan and what has come back for it."""

    key: K
    plan: Plan
    blender: Blender | None  # tiled images
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # whole images: one per pass
    error: Exception | None = None


class Segmenter:
    def __init__(
        self,
        backend: Backend,
        batch_size: int | None = None,
        fit: str = "auto",
        tile: str | tuple[int, int] | None = "auto",
        overlap: int | None = None,
        tta: str = "off",
    ) -> None:
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        if tta not in TTA_FLIPS:
            raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {tta!r}")
        self.backend = backend
        self.card = backend.card
        limit = backend.max_batch
        if backend.fixed_batch:
            if batch_size is not None and batch_size != limit:
                raise ValueError(
                    f"this model was exported with a fixed batch of {limit}; --batch {batch_size} cannot run "
                    "on it (export with --batch dynamic for other sizes)"
                )
            batch_size = limit
        if batch_size is None:  # a deploy folder's tuned batch, else the default
            batch_size = min(backend.preferred_batch or DEFAULT_BATCH, limit or DEFAULT_BATCH)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if limit is not None and batch_size > limit:
            raise ValueError(f"batch size {batch_size} is over this model's maximum of {limit}")
        self.batch_size = batch_size
        self.has_probs = "probs" in backend.output_names
        self.has_mask = "mask" in backend.output_names
        self.tta = tta
        self.passes = TTA_FLIPS[tta]
        if tta != "off" and not self.has_probs:
            raise ValueError(
                "--tta averages probabilities; this model outputs only masks (exported with --output mask)"
            )
        h, w = backend.input_hw
        self.input_hw: tuple[int, int] | None = (h, w) if h is not None and w is not None else None
        native = native_size(backend, DYNAMIC_TILE)  # the tile "auto" means
        self.tile, self.overlap = choose_tiling(
            tile, fit, overlap, native, self.input_hw, self.card.input_multiple
        )
        if fit == "resize" and self.input_hw is None:
            if not (self.card.input_height and self.card.input_width):
                raise ValueError(
                    "fit='resize' needs a model with a fixed input size; this one takes any size"
                )
            self.input_hw = (self.card.input_height, self.card.input_width)
        if fit == "auto":
            fit = "tile" if self.tile else "resize" if self.input_hw is not None else "pad"
        self.fit = fit

    def describe(self) -> str:
        """How images are fitted, in words for the summary and the output folder's manifest."""
        how = self.fit
        if self.tile:
            how = f"tile {self.tile[0]}x{self.tile[1]} overlap {self.overlap}"
        return how + ("" if self.tta == "off" else f" tta {self.tta}")

    # -- 1. plan ------------------------------------------------------------------------------------------

    def _checked(self, image: np.ndarray, origin: str) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"{origin}: expected an (H, W) or (H, W, C) image array, got {shape}")
        if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
            raise ValueError(f"{origin}: {image.shape[2]} channels; images have 1, 3 or 4")
        # a 16-bit array is mapped as the card says (an array records no bit depth: auto is the full range)
        return to_channels(to_uint8(image, origin, self.card.intensity), self.card.input_channels)

    def tiled(self, size: tuple[int, int]) -> bool:
        """Whether an image of this (H, W) runs as tiles: one larger than a tile, or any
        other size than its input on a fixed-size model (smaller ones mirror-filled, not
        scaled); an image of exactly the model's size runs whole."""
        if self.tile is None or size == self.input_hw:
            return False
        return self.input_hw is not None or size[0] > self.tile[0] or size[1] > self.tile[1]

    def plan(self, image: np.ndarray, origin: str = "<array>") -> Plan:
        """Any (H, W) or (H, W, 1|3|4) uint8/uint16 array -> its plan: tiles or a whole image."""
        image = self._checked(image, origin)
        size = (int(image.shape[0]), int(image.shape[1]))
        if self.tile is not None and self.tiled(size):
            return Tiled(image, TileGrid.over(size, self.tile, self.overlap, self.card.input_multiple))
        return self._whole(image, size)

    def prepare(self, image: np.ndarray, origin: str = "<array>") -> Prepared:
        """The image whole, as the model takes it (tiling aside): calibration uses this."""
        image = self._checked(image, origin)
        return self._whole(image, (int(image.shape[0]), int(image.shape[1])))

    def _whole(self, image: np.ndarray, size: tuple[int, int]) -> Prepared:
        if self.input_hw is None:  # dynamic model: own resolution, padded to the stride
            return Prepared(pad_to_multiple(image, self.card.input_multiple), size, size)
        if self.fit in ("resize", "tile") or size == self.input_hw:
            shrink = size[0] * size[1] > self.input_hw[0] * self.input_hw[1]
            method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            return Prepared(resize(image, self.input_hw, method), size, self.input_hw)
        # pad: scale down only if it does not fit, keep the aspect ratio, mirror-pad the rest
        scale = min(1.0, self.input_hw[0] / size[0], self.input_hw[1] / size[1])
        valid = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        scaled = resize(image, valid, cv2.INTER_AREA)
        return Prepared(mirror_pad(scaled, self.input_hw), size, valid)

    def plan_window(
        self,
        source: ArraySource,
        plane: int,
        emit: Rows,
        from_row: int = 0,
        intensity: str | None = None,
        note: Note | None = None,
        columns: tuple[int, int] | None = None,
        to_row: int | None = None,
    ) -> Windowed:
        """Plane ``plane`` of ``source`` (or its column strip ``columns``) read by windows,
        its finished rows to ``emit``, from row ``from_row`` on (up to ``to_row``; windows.py)."""
        tiling, stitched = (self.tile, self.overlap), not self.has_probs
        return plan_window(
            source, plane, emit, tiling, self.card, stitched, from_row, intensity, note, columns, to_row
        )

    def pieces(self, plan: Plan) -> Iterator[np.ndarray]:
        """What goes to the model for one image, in order: each tile (row-major) or the
        whole image, each followed by its flips with test-time augmentation."""
        if isinstance(plan, Windowed):
            yield from window_pieces(plan, self.passes, self.card.input_channels)
        elif isinstance(plan, Tiled):
            for r in range(len(plan.grid.rows)):
                for c in range(len(plan.grid.cols)):
                    tile = plan.grid.tile_image(plan.image, r, c)
                    for rows, cols in self.passes:
                        yield np.ascontiguousarray(flip(tile, rows, cols))
        else:
            for rows, cols in self.passes:
                yield np.ascontiguousarray(flip(plan.image, rows, cols))

    # -- 2. infer -----------------------------------------------------------------------------------------

    def _open(self, key: K, plan: Plan, probs: bool, probs_dtype: Any) -> _Image[K]:
        blender = None
        if isinstance(plan, Tiled | Windowed):
            classes = self.card_classes if self.has_probs else 0
            emit, start, end = (
                (plan.emit, plan.start_row, plan.end_row) if isinstance(plan, Windowed) else (None, 0, None)
            )
            blender = Blender(plan.grid, classes, len(self.passes), probs, probs_dtype, emit, start, end)
        return _Image(key, plan, blender)

    @property
    def card_classes(self) -> int:
        """Channels of the probabilities output: 1 for a sigmoid head."""
        return 1 if self.card.output_kind == "sigmoid" else len(self.card.classes)

    def _batches(
        self,
        pieces: Iterable[tuple[_Image[K], np.ndarray]],
        pending: deque[list[tuple[_Image[K], np.ndarray]]],
    ) -> Iterator[np.ndarray]:
        group: list[tuple[_Image[K], np.ndarray]] = []

        def flush() -> np.ndarray:
            batch = self._as_batch([piece for _, piece in group])
            pending.append(list(group))
            group.clear()
            return batch

        for image, piece in pieces:
            if group and (len(group) == self.batch_size or group[0][1].shape != piece.shape):
                yield flush()
            group.append((image, piece))
        if group:
            yield flush()

    def _as_batch(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Pieces of one shape stacked; a fixed-batch model gets the last one repeated to its batch."""
        batch = np.stack(pieces)
        if self.backend.fixed_batch and len(pieces) < self.batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(pieces), axis=0)])
        return batch

    def stream(
        self,
        items: Iterable[tuple[K, Plan]],
        probs: bool = False,
        probs_dtype: Any = np.float32,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[K, Plan, Output | Exception]]:
        """Run (key, plan) pairs in order; yields (key, plan, result) in the same order, the
        result an ``Output`` at the image's own size (with ``probs`` when asked for), or the
        exception that made this image fail (the others go on). ``progress(n)``: called with
        the pieces each batch took through the model."""
        if probs and not self.has_probs:
            raise ValueError(
                f"{self.backend.name}: this model has no probabilities output (it was exported with "
                "--output mask); re-export with --output both"
            )
        pending: deque[list[tuple[_Image[K], np.ndarray]]] = deque()  # batches in the backend
        done: deque[_Image[K]] = deque()  # finished (or failed) images, to yield in order
        source_error: list[BaseException] = []

        def pieces() -> Iterator[tuple[_Image[K], np.ndarray]]:
            try:
                for key, plan in items:
                    image = self._open(key, plan, probs, probs_dtype)
                    for piece in self.pieces(plan):
                        if image.error is not None:
                            break
                        yield image, piece
            except BaseException as exc:  # the caller's, not the backend's: re-raised, never retried
                source_error.append(exc)
                raise

        batches = self._batches(pieces(), pending)
        results = self.backend.infer_stream(batches)
        while True:
            try:
                outputs = next(results)
            except StopIteration:
                break
            except Exception:
                if source_error or not pending:
                    raise
                while pending:  # the batches in flight again, one image at a time
                    self._retry(pending.popleft(), done)
                results = self.backend.infer_stream(batches)  # on with the batches not yet made
            else:
                group = pending.popleft()
                for i, (image, _) in enumerate(group):
                    if image.error is None:
                        self._add(image, {name: value[i] for name, value in outputs.items()}, done)
                if progress is not None:
                    progress(len(group))
            while done:
                image = done.popleft()
                yield image.key, image.plan, image.error or self._result(image, probs)

    def _retry(self, group: list[tuple[_Image[K], np.ndarray]], done: deque[_Image[K]]) -> None:
        """A failed batch's pieces, each image's on their own; an image that fails alone fails."""
        start = 0
        while start < len(group):
            image = group[start][0]
            end = start
            while end < len(group) and group[end][0] is image:
                end += 1
            if image.error is None:
                try:
                    alone = self.backend.infer(self._as_batch([piece for _, piece in group[start:end]]))
                except Exception as exc:
                    image.error = exc
                    done.append(image)
                else:
                    for i in range(end - start):
                        self._add(image, {name: value[i] for name, value in alone.items()}, done)
            start = end

    def _add(self, image: _Image[K], outputs: dict[str, np.ndarray], done: deque[_Image[K]]) -> None:
        n = len(self.passes)
        if image.blender is not None:
            index = image.blender.added % n
            piece = flip(outputs["probs"], *self.passes[index]) if self.has_probs else outputs["mask"]
            image.blender.add(piece)
            if image.blender.done:
                done.append(image)
        else:
            image.outputs.append(outputs)
            if len(image.outputs) == n:
                done.append(image)

    # -- 3. assemble --------------------------------------------------------------------------------------

    def _result(self, image: _Image[K], probs: bool) -> Output:
        if isinstance(image.plan, Windowed):  # its rows went to the plan's emit as they finished
            return Output(np.zeros((0, image.plan.size[1]), np.uint8), None)
        if image.blender is not None:
            return Output(image.blender.mask, image.blender.probs)
        plan = image.plan
        assert isinstance(plan, Prepared)
        if len(self.passes) > 1:
            mean = sum(flip(o["probs"], *p) for o, p in zip(image.outputs, self.passes)) / len(self.passes)
            outputs = {"probs": np.asarray(mean, np.float32)}
            outputs["mask"] = mask_from_probs(outputs["probs"])
        else:
            outputs = image.outputs[0]
            if not self.has_mask:
                outputs = {**outputs, "mask": mask_from_probs(outputs["probs"])}
        return restore(plan, outputs if probs else {"mask": outputs["mask"]})

    # -- all three ----------------------------------------------------------------------------------------

    @staticmethod
    def by_shape(items: Iterable[tuple[K, Plan]]) -> list[tuple[K, Plan]]:
        """Same-shape pieces next to each other so they share batches (input order within a shape)."""
        return sorted(items, key=lambda item: item[1].shape)

    def segment(self, images: Sequence[np.ndarray], probs: bool = False) -> list[Output]:
        """Each image's mask (and with ``probs=True`` its probabilities) at its own size, in
        input order: plan, batch by shape, infer, assemble. An image that fails raises."""
        plans = [self.plan(image, f"images[{i}]") for i, image in enumerate(images)]
        results: list[Any] = [None] * len(plans)
        for i, _, result in self.stream(self.by_shape(enumerate(plans)), probs=probs):
            if isinstance(result, Exception):
                raise result
            results[i] = result
        return results

    def predict(self, images: Sequence[np.ndarray], probs: bool = False) -> list[np.ndarray]:
        """Masks (uint8 (H, W) class indices), or with ``probs=True`` probabilities
        (float32 (H, W, K)), each at its image's own size, in input order."""
        outputs = self.segment(images, probs)
        return [out.probs for out in outputs if out.probs is not None] if probs else [o.mask for o in outputs]
