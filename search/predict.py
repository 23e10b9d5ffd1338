"""``fersearch predict``: image files, folders, Kaggle-format CSVs and videos → one result per face.

Raw photos and video frames go through the training pipeline's Viola–Jones face ROI
(``data_pipeline.preprocess``): every frontal face is found, cropped with the same eyes/mouth rule, resized
to 48×48 and classified, and its box is reported in the original image's pixels. Which images get the ROI
follows the export's recorded preprocessing (``manifest.json`` ``preprocessing``); when nothing is recorded
the data pipeline's ``auto`` rule applies: images larger than twice 48 px (photos, frames) are searched for
faces, smaller ones (pre-cropped 48×48 faces, every CSV row) are classified whole.

Python::

    predictor = Predictor.from_dir("runs/x/export")
    for r in predict_paths(predictor, ["photos/", "clip.mp4"], every=10):
        print(r.input, r.box, r.label)
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from data_pipeline.config import PreprocessConfig
from data_pipeline.preprocess import decode_image, face_rois, finish, wants_roi

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
NO_FACE = "no face found by the Viola-Jones detector"
SIDE = 48

Box = tuple[int, int, int, int]


class InputError(ValueError):
    """An input that cannot be classified; the message names the file (and row or frame)."""


class _Model(Protocol):
    classes: list[str]

    def predict_proba(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Result:
    """One classified face (or whole image), or why an input gave none.

    ``status``: ``ok``; ``no_face`` (readable, but the detector found no face: ``label`` is None);
    ``error`` (unreadable file, CSV row or video). ``box``: the face box (x, y, w, h) in the input's pixels,
    or the whole image when it was classified without ROI; ``roi``: the crop that was classified when the
    face ROI was applied. ``frame`` / ``time`` (seconds) only for video frames.
    """

    input: str
    status: str = "ok"
    label: str | None = None
    probabilities: dict[str, float] | None = None
    box: Box | None = None
    roi: Box | None = None
    frame: int | None = None
    time: float | None = None
    error: str | None = None

    def to_json(self) -> dict:
        """The JSON-lines record: ``input``, [``frame``, ``time``], ``box``, ``roi``, ``class``,
        ``probabilities`` [, ``error``]."""
        record: dict = {"input": self.input}
        if self.frame is not None:
            record["frame"] = self.frame
            record["time"] = self.time
        record["box"] = list(self.box) if self.box else None
        record["roi"] = list(self.roi) if self.roi else None
        record["class"] = self.label
        record["probabilities"] = (
            {c: round(v, 6) for c, v in self.probabilities.items()} if self.probabilities else None
        )
        if self.error:
            record["error"] = self.error
        return record

    def csv_row(self, classes: list[str]) -> list[str]:
        """Values for ``csv_header(classes)``."""
        x, y, w, h = self.box if self.box else ("",) * 4
        probs = (
            [f"{self.probabilities[c]:.6f}" for c in classes] if self.probabilities else [""] * len(classes)
        )
        return [
            self.input,
            "" if self.frame is None else str(self.frame),
            "" if self.time is None else f"{self.time:.3f}",
            *map(str, (x, y, w, h)),
            self.label or "",
            *probs,
            self.error or "",
        ]


def csv_header(classes: list[str]) -> list[str]:
    return ["input", "frame", "time", "x", "y", "w", "h", "class", *classes, "error"]


@dataclass(frozen=True)
class _Item:
    """A 48×48 image to classify, or the result an input ends with instead."""

    input: str
    image: np.ndarray | None = None
    box: Box | None = None
    roi: Box | None = None
    frame: int | None = None
    time: float | None = None
    status: str = "ok"
    error: str | None = None


def preprocess_config(manifest: dict | None, roi: bool | str = True) -> PreprocessConfig:
    """The preprocessing an export expects, from its manifest's ``preprocessing`` record.

    Understood records: the data pipeline's ``{"roi", "roi_margin", "equalize"}``, or ``face_roi`` as a
    mode string, a bool, or ``{"mode", "margin"}``; ``face_roi: null`` (what exports write today) means
    nothing is recorded → ``auto``. ``roi``: True = as recorded, False = never (whole image), or a mode
    ``auto`` / ``face`` / ``none`` that overrides the record.
    """
    rec = (manifest or {}).get("preprocessing") or {}
    mode, margin, equalize = "auto", 0.1, rec.get("equalize", "none")
    face_roi = rec.get("face_roi")
    if isinstance(rec.get("roi"), str):
        mode, margin = rec["roi"], rec.get("roi_margin", margin)
    elif isinstance(face_roi, str):
        mode = face_roi
    elif isinstance(face_roi, bool):
        mode = "face" if face_roi else "none"
    elif isinstance(face_roi, dict):
        mode = face_roi.get("mode", "face")
        margin = face_roi.get("margin", face_roi.get("roi_margin", margin))
    if roi is False:
        mode = "none"
    elif isinstance(roi, str):
        mode = roi
    return PreprocessConfig(size=SIDE, equalize=equalize or "none", roi=mode, roi_margin=float(margin))


def faces(gray: np.ndarray, cfg: PreprocessConfig) -> list[tuple[np.ndarray, Box, Box | None]]:
    """(48×48 image, face box, ROI box | None) for each face of one grayscale image, as training crops
    them; the whole image (box = the image) when ``cfg`` applies no ROI to an image of this size. Empty
    when the ROI applies and no face is found."""
    h, w = gray.shape
    if not wants_roi(cfg, h, w):
        return [(finish(gray, cfg), (0, 0, w, h), None)]
    return [(finish(f.crop, cfg), f.box, f.roi) for f in face_rois(gray, cfg.roi_margin)]


def _image_items(name: str, gray: np.ndarray, cfg: PreprocessConfig, **where) -> Iterator[_Item]:
    found = faces(gray, cfg)
    if not found:
        yield _Item(name, status="no_face", error=NO_FACE, **where)
    for image, box, roi in found:
        yield _Item(name, image, box, roi, **where)


def load_gray(path: Path) -> np.ndarray:
    """An image file → 8-bit grayscale (any size), decoded like the data pipeline does (JPEGs also turned
    upright by their EXIF orientation: phone photos are often stored sideways)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e.strerror or e})") from e
    if data[:2] == b"\xff\xd8":  # JPEG: turn it upright by its EXIF orientation, as image viewers do
        upright = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if upright is not None and upright.size:
            return cv2.cvtColor(upright, cv2.COLOR_BGR2GRAY)
    img, reason = decode_image(data)
    if img is None:
        raise InputError(f"{path}: not a readable image ({reason})")
    return img


def iter_csv(path: Path) -> Iterator[tuple[str, np.ndarray | InputError]]:
    """(``file:row i``, 48×48 image | InputError) per row of a Kaggle-format CSV (``pixels`` column)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    i = -1
    try:
        with opener(path, "rt", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "pixels" not in reader.fieldnames:
                raise InputError(f"{path}: row 0 (header) has no 'pixels' column: {reader.fieldnames}")
            for i, row in enumerate(reader):
                name = f"{path}:row {i}"
                try:
                    values = np.array((row["pixels"] or "").split(), dtype=np.int64)
                except (ValueError, AttributeError):
                    yield name, InputError(f"{name}: pixels are not all integers")
                    continue
                if values.size != SIDE * SIDE or values.min() < 0 or values.max() > 255:
                    yield (
                        name,
                        InputError(f"{name}: pixels must be 2304 integers in 0..255, got {values.size}"),
                    )
                    continue
                yield name, values.astype(np.uint8).reshape(SIDE, SIDE)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        where = "header" if i < 0 else f"after row {i}"
        raise InputError(f"{path}: not a readable CSV ({where}: {e})") from e


def iter_video(path: Path, every: int | None = None) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """(frame index, time in seconds | None, grayscale frame) for every ``every``-th frame (default: one
    frame per second of video, by its fps; every frame when the fps is unknown)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: not a readable video")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        step = every if every else (max(1, round(fps)) if fps else 1)
        if step < 1:
            raise InputError(f"{path}: --every must be ≥ 1, got {step}")
        index = read = 0
        while True:
            if index % step:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                read += 1
                if frame.ndim == 3:
                    frame = cv2.cvtColor(
                        frame, cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
                    )
                yield index, (round(index / fps, 3) if fps else None), np.ascontiguousarray(frame)
            index += 1
        if read == 0:
            raise InputError(f"{path}: not a readable video (no frame could be decoded)")
    finally:
        cap.release()


def _is_csv(p: Path) -> bool:
    return p.name.lower().endswith((".csv", ".csv.gz"))


def _items(paths: Iterable[str | Path], cfg: PreprocessConfig, every: int | None) -> Iterator[_Item]:
    for p in map(Path, paths):
        if p.is_dir():
            wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            for f in sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in wanted):
                yield from _file_items(f, cfg, every)
        elif p.is_file():
            yield from _file_items(p, cfg, every)
        else:
            yield _Item(str(p), status="error", error=f"{p}: no such file or directory")


def _file_items(p: Path, cfg: PreprocessConfig, every: int | None) -> Iterator[_Item]:
    try:
        if _is_csv(p):
            for name, row in iter_csv(p):
                if isinstance(row, InputError):
                    yield _Item(name, status="error", error=str(row))
                else:
                    yield from _image_items(name, row, cfg)
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            for index, t, gray in iter_video(p, every):
                yield from _image_items(f"{p}#frame={index}", gray, cfg, frame=index, time=t)
        else:
            yield from _image_items(str(p), load_gray(p), cfg)
    except InputError as e:
        yield _Item(str(p), status="error", error=str(e))


def predict_paths(
    predictor: _Model,
    paths: Iterable[str | Path],
    *,
    roi: bool | str = True,
    every: int | None = None,
    batch_size: int = 256,
) -> Iterator[Result]:
    """Classify image files, folders (recursive), Kaggle CSVs (.csv/.csv.gz) and videos (.mp4 .avi .mov
    .mkv .webm), yielding results in input order: one per face, one ``no_face`` result per image or frame
    without a face, one ``error`` result per unreadable file / row / video. Nothing is dropped.

    ``roi``: see ``preprocess_config`` (True: as the export records, else ``auto``). ``every``: classify
    every N-th video frame (default: one frame per second). Batches of ``batch_size`` faces.
    """
    cfg = preprocess_config(getattr(predictor, "manifest", None), roi)
    if every is not None and every < 1:
        raise InputError(f"every must be ≥ 1, got {every}")
    classes = list(predictor.classes)
    pending: list[_Item] = []
    waiting = 0

    def flush() -> Iterator[Result]:
        images = [it.image for it in pending if it.image is not None]
        probs = iter(predictor.predict_proba(np.stack(images)) if images else ())
        for it in pending:
            where = {"box": it.box, "roi": it.roi, "frame": it.frame, "time": it.time}
            if it.image is None:
                yield Result(it.input, status=it.status, error=it.error, **where)
                continue
            p = next(probs)
            yield Result(
                it.input,
                label=classes[int(p.argmax())],
                probabilities={c: float(v) for c, v in zip(classes, p, strict=True)},
                **where,
            )
        pending.clear()

    for item in _items(paths, cfg, every):
        pending.append(item)
        waiting += item.image is not None
        if waiting >= batch_size:
            yield from flush()
            waiting = 0
    yield from flush()


__all__ = [
    "IMAGE_SUFFIXES",
    "NO_FACE",
    "VIDEO_SUFFIXES",
    "InputError",
    "Result",
    "csv_header",
    "faces",
    "iter_csv",
    "iter_video",
    "load_gray",
    "predict_paths",
    "preprocess_config",
]
