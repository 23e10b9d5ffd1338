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
from data_pipeline.preprocess import (
    DETECTORS,
    FACE_BOX_SCALE,
    decode_image,
    face_rois,
    find_faces,
    finish,
    image_format,
    square_about,
    wants_roi,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
NO_FACE = "no face found by the face detector"
SIDE = 48
MIN_SIDE = 16  # below this a picture cannot hold a recognisable face (FER2013 faces are 48 px)
STATUSES = ("ok", "no_face", "error", "skipped")
CROPS = ("face-box", "eyes-mouth")

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
    ``error`` (unreadable file, CSV row or video, an image too small to hold a face, a truncated video);
    ``skipped`` (a file that is no image, video or CSV). ``box``: the face box (x, y, w, h) in the
    input's pixels, or the whole image when it was classified without ROI; ``roi``: the crop that was
    classified when the face ROI was applied. ``frame`` / ``time`` (seconds) only for video frames.
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
        """The JSON-lines record: ``input``, ``status``, [``frame``, ``time``], ``box``, ``roi``,
        ``class``, ``probabilities`` [, ``error``]."""
        record: dict = {"input": self.input, "status": self.status}
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
            self.status,
            self.error or "",
        ]


def csv_header(classes: list[str]) -> list[str]:
    return ["input", "frame", "time", "x", "y", "w", "h", "class", *classes, "status", "error"]


@dataclass(frozen=True)
class Item:
    """A 48×48 image to classify, or the result an input ends with instead (``image`` None)."""

    input: str
    image: np.ndarray | None = None
    box: Box | None = None
    roi: Box | None = None
    frame: int | None = None
    time: float | None = None
    status: str = "ok"
    error: str | None = None


def preprocess_config(preprocessing: dict | None, roi: bool | str = True) -> PreprocessConfig:
    """The preprocessing an export expects, from its manifest's ``preprocessing`` record (``None``: none).

    Understood records: the data pipeline's ``{"roi", "roi_margin", "equalize"}``, or ``face_roi`` as a
    mode string, a bool, or ``{"mode", "margin"}``; ``face_roi: null`` (what exports write today) means
    nothing is recorded → ``auto``. ``roi``: True = as recorded, False = never (whole image), or a mode
    ``auto`` / ``face`` / ``none`` that overrides the record.
    """
    rec = preprocessing or {}
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


def crop_of(preprocessing: dict | None) -> str:
    """How the export's training images were cropped, so raw photos can be cropped the same way.

    ``face-box``: whole-face crops as datasets like FER2013 or CK+48 ship them (the face detector's box
    with FER2013's margin reproduces them); ``eyes-mouth``: the pipeline's eyes-to-mouth ROI of photos
    (JAFFE, a folder of photos, ``--roi face``). Read from ``preprocessing.crop``; an export that does not
    record it was trained on the search's FER2013 CSV (``face-box``) unless its ROI was forced on."""
    rec = preprocessing or {}
    if rec.get("crop") in CROPS:
        return rec["crop"]
    forced = rec.get("roi") == "face" or rec.get("face_roi") in ("face", True)
    forced = forced or (
        isinstance(rec.get("face_roi"), dict) and rec["face_roi"].get("mode", "face") == "face"
    )
    return "eyes-mouth" if forced else "face-box"


def face_box_crop(gray: np.ndarray, box: Box, scale: float = FACE_BOX_SCALE) -> tuple[np.ndarray, Box]:
    """A FER2013-like crop of one Haar box: the square of ``scale`` × the box's side about its centre."""
    x, y, bw, bh = box
    return square_crop(gray, square_about(x + bw / 2, y + bh / 2, max(bw, bh) * scale))


def square_crop(gray: np.ndarray, square: Box) -> tuple[np.ndarray, Box]:
    """The pixels of a square (x, y, side, side), edges replicated where it leaves the image, and that
    square clipped to the image."""
    h, w = gray.shape
    x0, y0, side, _ = square
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    src = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
    crop = src[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    cx0, cy0 = max(0, x0), max(0, y0)
    return crop, (cx0, cy0, min(w, x0 + side) - cx0, min(h, y0 + side) - cy0)


def faces(
    gray: np.ndarray, cfg: PreprocessConfig, crop: str = "face-box", detector: str | None = None
) -> list[tuple[np.ndarray, Box, Box | None]]:
    """(48×48 image, face box, crop box | None) for each face of one grayscale image, in reading order,
    cropped as the export's training images were (``crop``, see :func:`crop_of`); the whole image (box =
    the image) when ``cfg`` applies no ROI to an image of this size. Empty when no face is found."""
    h, w = gray.shape
    if not wants_roi(cfg, h, w):
        return [(finish(gray, cfg), (0, 0, w, h), None)]
    if crop == "eyes-mouth":
        return [(finish(f.crop, cfg), f.box, f.roi) for f in face_rois(gray, cfg.roi_margin)]
    out = []
    for face in sorted(find_faces(gray, detector), key=lambda f: f.box):
        box = face.box
        x0, y0 = min(max(0, box[0]), w - 1), min(max(0, box[1]), h - 1)
        clipped = (x0, y0, max(1, min(w, box[0] + box[2]) - x0), max(1, min(h, box[1] + box[3]) - y0))
        image, roi = square_crop(gray, face.square)
        out.append((finish(image, cfg), clipped, roi))
    return out


def image_items(
    name: str, gray: np.ndarray, cfg: PreprocessConfig, crop: str, detector: str | None = None, **where
) -> Iterator[Item]:
    """The faces of one decoded image as ``predict`` and ``serve`` both classify them, or one item saying
    why it has none (too small to hold a face, no face found)."""
    h, w = gray.shape
    if min(h, w) < MIN_SIDE:
        why = f"{name}: image is {w}×{h} px, too small to hold a face (needs at least {MIN_SIDE} px a side)"
        yield Item(name, status="error", error=why, **where)
        return
    found = faces(gray, cfg, crop, detector)
    if not found:
        yield Item(name, status="no_face", error=NO_FACE, **where)
    for image, box, roi in found:
        yield Item(name, image, box, roi, **where)


def load_gray(path: Path) -> np.ndarray:
    """An image file → 8-bit grayscale (any size), decoded as :func:`decode_upload` does."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e.strerror or e})") from e
    return decode_upload(data, str(path))


def truncated_jpeg(data: bytes) -> str | None:
    """Why a JPEG's data stops short, or None. OpenCV decodes a truncated JPEG without an error (the
    missing rows grey), so a cut upload would be classified as a face half grey; Pillow's decoder says
    how many bytes it lacked."""
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes → 8-bit grayscale (any size), the one decoding of ``predict`` and ``serve``;
    JPEGs are turned upright by their EXIF orientation (phone photos are often stored sideways) and
    refused when truncated. Raises ``InputError`` naming ``name`` and what is wrong."""
    if data[:2] == b"\xff\xd8":
        cut = truncated_jpeg(data)
        if cut:
            raise InputError(f"{name}: truncated or damaged JPEG ({cut})")
        upright = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if upright is not None and upright.size:
            return cv2.cvtColor(upright, cv2.COLOR_BGR2GRAY)
    img, reason = decode_image(data)
    if img is None:
        raise InputError(f"{name}: not a readable image ({reason})")
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
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count > index + 1:  # one frame of slack: some containers round their frame count
            raise InputError(
                f"{path}: truncated video: its header announces {count} frames, only {index} could be read "
                f"(frames {index}..{count - 1} are missing)"
            )
    finally:
        cap.release()


def _is_csv(p: Path) -> bool:
    return p.name.lower().endswith((".csv", ".csv.gz"))


def _kind(p: Path) -> str:
    """How a file is read: ``csv``, ``video``, ``image`` (by extension, else by its first bytes), or
    ``skip`` (hidden, or neither)."""
    if p.name.startswith("."):
        return "skip"
    if _is_csv(p):
        return "csv"
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return "image"  # let the image reader report why it cannot be read
    return "image" if image_format(head) else "skip"


def _items(
    paths: Iterable[str | Path], cfg: PreprocessConfig, crop: str, every: int | None, detector: str | None
) -> Iterator[Item]:
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                yield from _file_items(f, cfg, crop, every, detector)
        elif p.is_file():
            yield from _file_items(p, cfg, crop, every, detector)
        else:
            yield Item(str(p), status="error", error=f"{p}: no such file or directory")


def _file_items(
    p: Path, cfg: PreprocessConfig, crop: str, every: int | None, detector: str | None
) -> Iterator[Item]:
    kind = _kind(p)
    if kind == "skip":
        what = "a hidden file" if p.name.startswith(".") else f"{p.suffix or 'no extension'}, no image format"
        why = f"{p}: not an image, video or CSV ({what})"
        yield Item(str(p), status="skipped", error=why)
        return
    try:
        if kind == "csv":
            for name, row in iter_csv(p):
                if isinstance(row, InputError):
                    yield Item(name, status="error", error=str(row))
                else:
                    yield from image_items(name, row, cfg, crop, detector)
        elif kind == "video":
            for index, t, gray in iter_video(p, every):
                yield from image_items(f"{p}#frame={index}", gray, cfg, crop, detector, frame=index, time=t)
        else:
            yield from image_items(str(p), load_gray(p), cfg, crop, detector)
    except InputError as e:
        yield Item(str(p), status="error", error=str(e))


def result_of(item: Item, probs: np.ndarray | None, classes: list[str]) -> Result:
    """The record of one item: its class and probabilities (``probs``), or the reason it has none."""
    where = {"box": item.box, "roi": item.roi, "frame": item.frame, "time": item.time}
    if item.image is None or probs is None:
        return Result(item.input, status=item.status, error=item.error, **where)
    return Result(
        item.input,
        label=classes[int(probs.argmax())],
        probabilities={c: float(v) for c, v in zip(classes, probs, strict=True)},
        **where,
    )


def predict_paths(
    predictor: _Model,
    paths: Iterable[str | Path],
    *,
    roi: bool | str = True,
    every: int | None = None,
    batch_size: int = 256,
    crop: str | None = None,
    detector: str | None = None,
) -> Iterator[Result]:
    """Classify image files, folders (recursive), Kaggle CSVs (.csv/.csv.gz) and videos (.mp4 .avi .mov
    .mkv .webm), yielding results in input order: one per face, one ``no_face`` result per image or frame
    without a face, one ``error`` result per unreadable file / row / video, image too small to hold a face
    or truncated video (after its readable frames), one ``skipped`` result per file that is none of
    these (a ``.txt`` in a folder). Nothing is dropped: every input is accounted for.

    ``roi``: see ``preprocess_config`` (True: as the export records, else ``auto``). ``every``: classify
    every N-th video frame (default: one frame per second). Batches of ``batch_size`` faces. ``crop``:
    ``face-box`` or ``eyes-mouth`` (default: as the export's training images were, :func:`crop_of`).
    ``detector``: the face-box crop's face detector, ``yunet`` or ``haar`` (default:
    ``data_pipeline.preprocess.default_detector``); the eyes-mouth crop is Haar's eyes and mouth.
    """
    manifest = getattr(predictor, "manifest", None)  # ExportManifest of a Predictor; a stand-in may have none
    recorded = manifest.preprocessing if manifest is not None else None
    cfg = preprocess_config(recorded, roi)
    crop = crop or crop_of(recorded)
    if crop not in CROPS:
        raise InputError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if every is not None and every < 1:
        raise InputError(f"every must be ≥ 1, got {every}")
    if detector is not None and detector not in DETECTORS:
        raise InputError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    classes = list(predictor.classes)
    pending: list[Item] = []
    waiting = 0

    def flush() -> Iterator[Result]:
        images = [it.image for it in pending if it.image is not None]
        probs = iter(predictor.predict_proba(np.stack(images)) if images else ())
        for it in pending:
            if it.image is None:
                yield result_of(it, None, classes)
                continue
            yield result_of(it, next(probs), classes)
        pending.clear()

    for item in _items(paths, cfg, crop, every, detector):
        pending.append(item)
        waiting += item.image is not None
        if waiting >= batch_size:
            yield from flush()
            waiting = 0
    yield from flush()


__all__ = [
    "CROPS",
    "FACE_BOX_SCALE",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
    "NO_FACE",
    "STATUSES",
    "VIDEO_SUFFIXES",
    "InputError",
    "Item",
    "Result",
    "crop_of",
    "csv_header",
    "decode_upload",
    "face_box_crop",
    "faces",
    "square_crop",
    "iter_csv",
    "image_items",
    "iter_video",
    "load_gray",
    "predict_paths",
    "preprocess_config",
    "result_of",
]
