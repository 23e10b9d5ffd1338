"""Inputs for ``fersearch predict``: image files, folders of images, or a Kaggle-format CSV."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".webp"}


class InputError(ValueError):
    """An input that cannot be classified; the message names the file (and row)."""


def load_image(path: Path) -> np.ndarray:
    """Any image file → uint8 48×48 grayscale (resized whole; face ROI comes with the data pipeline)."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.shape != (48, 48):
        img = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)
    return img


def iter_csv(path: Path) -> Iterator[tuple[str, np.ndarray | InputError]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "pixels" not in reader.fieldnames:
            raise InputError(f"{path}: row 0 (header) has no 'pixels' column: {reader.fieldnames}")
        for i, row in enumerate(reader):
            name = f"{path}:row {i}"
            try:
                values = np.array(row["pixels"].split(), dtype=np.int64)
            except (ValueError, AttributeError):
                yield name, InputError(f"{name}: pixels are not all integers")
                continue
            if values.size != 48 * 48 or values.min() < 0 or values.max() > 255:
                yield name, InputError(f"{name}: pixels must be 2304 integers in 0..255, got {values.size}")
                continue
            yield name, values.astype(np.uint8).reshape(48, 48)


def iter_inputs(paths: list[str | Path]) -> Iterator[tuple[str, np.ndarray | InputError]]:
    """(name, image) for every input; unreadable inputs yield an InputError instead of an image."""
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            for f in files:
                yield from _one_image(f)
        elif p.name.endswith((".csv", ".csv.gz")):
            yield from iter_csv(p)
        elif p.is_file():
            yield from _one_image(p)
        else:
            yield str(p), InputError(f"{p}: no such file or directory")


def _one_image(path: Path) -> Iterator[tuple[str, np.ndarray | InputError]]:
    try:
        yield str(path), load_image(path)
    except InputError as e:
        yield str(path), e
