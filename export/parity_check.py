"""Run a Keras model and exported artifacts on the same images and compare them
(the engine behind ``fcnx parity`` and the check that ends every export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fcnx.runtime.atomic import atomic_write_bytes
from fcnx.runtime.backends.base import Backend, BackendError, native_size
from fcnx.runtime.backends.ort import OrtBackend
from fcnx.runtime.backends.registry import load
from fcnx.runtime.card import ModelCard
from fcnx.runtime.images import dataset_images, read_image, read_label
from fcnx.runtime.intensity import Note
from fcnx.runtime.predict.plans import mask_from_probs
from fcnx.runtime.predict.segmenter import Segmenter
from fcnx.train.evaluate import keras_segmenter
from fcnx.train.labels import class_spec_from_card

from .parity import ParityAccumulator, ParityRow

DEFAULT_SIZE = (256, 256)


def parity_images(
    card: ModelCard,
    size: tuple[int, int],
    data: str | Path | None,
    random_images: int,
    seed: int = 0,
    intensity: str | None = None,
    notes: Note | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray | None], list[str]]:
    """Seeded random images plus the real images of ``data/image`` (labels from
    ``data/label`` when present, decoded with the card's label encoding), all at ``size``;
    16-bit images mapped by ``intensity``, else by the card (its warnings to ``notes``)."""
    h, w = size
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, card.input_channels), np.uint8) for _ in range(random_images)]
    truths: list[np.ndarray | None] = [None] * random_images
    names = [f"random{i}" for i in range(random_images)]
    if data is None:
        return images, truths, names
    folder = Path(data)
    files = dataset_images(folder, "images for the parity check")
    classes = class_spec_from_card(card)
    for path in files:
        image = read_image(path, card.input_channels, intensity=intensity or card.intensity, note=notes)
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)[..., : card.input_channels]
            image = image.reshape(h, w, card.input_channels)
        truth = None
        label_path = (
            next(iter(sorted((folder / "label").glob(path.stem + ".*"))), None)
            if (folder / "label").is_dir()
            else None
        )
        if label_path is not None:
            ids = classes.decode(read_label(label_path), label_path)
            truth = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST) if ids.shape != (h, w) else ids
        images.append(image)
        truths.append(truth)
        names.append(path.name)
    return images, truths, names


def disagreement_png(image: np.ndarray, keras_mask: np.ndarray, mask: np.ndarray) -> bytes:
    """The image in grey, pixels where ``mask`` differs from ``keras_mask`` in red."""
    grey = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    picture = np.repeat(grey[..., None], 3, axis=2)
    picture[keras_mask != mask] = (255, 0, 0)
    ok, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode a disagreement picture")
    return data.tobytes()


def run_backend(
    backend: Backend, images: list[np.ndarray], tile: str = "auto", overlap: int | None = None
) -> dict[str, np.ndarray]:
    """All images through the runtime's one prediction path (Segmenter, tiled as ``fcnx
    predict`` tiles); "mask" always (the graph's own when it has one), "probs" when the
    model has them, stacked."""
    segmenter = Segmenter(backend, tile=tile, overlap=overlap)
    outputs = segmenter.segment(images, probs="probs" in backend.output_names)
    stacked = {"mask": np.stack([o.mask for o in outputs])}
    if outputs[0].probs is not None:
        stacked["probs"] = np.stack([o.probs for o in outputs])
    return stacked


def artifact_backend(artifact: str | Path) -> Backend | None:
    """The CPU backend an artifact's parity is judged on: onnxruntime for ``.onnx``, OpenVINO
    for an IR ``.xml`` (compiled with the precision its card records); None for others."""
    suffix = Path(artifact).suffix.lower()
    if suffix == ".onnx":
        return OrtBackend(artifact)
    if suffix == ".xml":
        return load(artifact, "ov-cpu")
    return None


def check_against_keras(
    model: Any,
    artifacts: list[str | Path],
    card: ModelCard,
    data: str | Path | None = None,
    random_images: int = 4,
    display_names: list[str] | None = None,
    maps: str | Path | None = None,
    max_maps: int = 4,
    tile: str = "auto",
    overlap: int | None = None,
    intensity: str | None = None,
    notes: Note | None = None,
) -> list[ParityRow]:
    """One judged ParityRow per artifact. An artifact that cannot be loaded or run gets
    a failing row saying why; the others are still compared. With ``maps``, the first
    ``max_maps`` real images get a disagreement picture per artifact,
    MAPS/ARTIFACT-NAME/IMAGE.png: the image in grey, red where the artifact's mask differs
    from Keras's (do FP16/INT8 flips sit on class boundaries or form blobs?). ``tile`` and
    ``overlap``: as ``fcnx predict``'s, for both the artifact and the Keras reference (the
    images are at the artifact's input size, so by default each is one tile). ``intensity``:
    how 16-bit real images become 8-bit (default: the card's), its warnings to ``notes``."""
    rows: list[ParityRow] = []
    cache: dict[tuple[int, int], tuple[list[np.ndarray], list[np.ndarray | None], np.ndarray, list[str]]] = {}
    for i, artifact in enumerate(artifacts):
        shown = display_names[i] if display_names else str(artifact)
        try:
            backend = artifact_backend(artifact)
        except BackendError as exc:
            rows.append(ParityRow(shown, "?", failures=[str(exc)]))
            continue
        if backend is None:
            rows.append(
                ParityRow(
                    shown, "?", failures=["only .onnx and .xml artifacts can be compared on this machine"]
                )
            )
            continue
        size = native_size(backend, DEFAULT_SIZE)
        if size not in cache:
            images, truths, names = parity_images(card, size, data, random_images, 0, intensity, notes)
            reference = keras_segmenter(model, card, tile=tile, overlap=overlap).predict(images, probs=True)
            cache[size] = (images, truths, np.stack(reference), names)
        images, truths, reference, names = cache[size]
        outputs = run_backend(backend, images, tile, overlap)
        probs, mask = outputs.get("probs"), outputs["mask"]
        if maps is not None:
            real = [j for j in range(len(images)) if j >= random_images][:max_maps]
            keras_mask = mask_from_probs(reference)
            for j in real:
                path = Path(maps) / Path(shown).name / f"{Path(names[j]).stem}.png"
                atomic_write_bytes(path, disagreement_png(images[j], keras_mask[j], mask[j]))
        accumulator = ParityAccumulator(shown, backend.card.precision, card.num_classes)
        for j, truth in enumerate(truths):
            accumulator.add(
                reference[j : j + 1],
                mask[j : j + 1],
                probs[j : j + 1] if probs is not None else None,
                truth[None] if truth is not None else None,
            )
        rows.append(accumulator.result(card.classes))
        backend.close()
    return rows
