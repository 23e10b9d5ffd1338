"""OpenCV image work done inside Ray Data tasks: decode, face detection (YuNet's landmarks or Viola–Jones),
face ROI, resize, equalise, augment.

Everything here is a pure function of its inputs (no random state): augmentation parameters are drawn in
the driver from the seed, so the output does not depend on how Ray splits the data into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from math import hypot

import cv2
import numpy as np

from data_pipeline.config import PreprocessConfig

FACE, EYES, MOUTH = 1, 2, 4
_DETECT_MIN = 144
_DETECT_MAX = 480
DETECTORS = ("yunet+haar", "yunet", "haar")
#: Haar: FER2013's square is the box's side times this about its centre (on 599 FER2013 images the box
#: spans a median 0.979 of the image side, centred).
FACE_BOX_SCALE = 1.02
#: YuNet: FER2013's square about the five landmarks: its centre (x, y) from the eyes' midpoint and its side,
#: in units of :func:`landmark_scale`'s ``s``. Medians over FER2013 Training faces:
#: ``python -m benchmarks.face_framing --data ../shared/data/fer2013.csv.gz --n 4000``.
YUNET_FRAMING = (0.0288, 0.3171, 2.5702)
#: YuNet's score (0..1) a detection needs.
YUNET_MIN_SCORE = 0.5

Box = tuple[int, int, int, int]
Point = tuple[float, float]


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if c.empty():
        raise RuntimeError(f"OpenCV Haar cascade {name} not found in {cv2.data.haarcascades}")
    return c


def image_format(head: bytes) -> str | None:
    """The image format a file's first bytes announce (``png``, ``jpeg``, ``gif``, ``bmp``, ``tiff``,
    ``webp``, ``pnm``), or None: lets an image without its extension be read, and a ``.txt`` be told
    apart from a damaged image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 14:
        return "bmp"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "pnm"
    return None


def decode_image(data: bytes | None) -> tuple[np.ndarray | None, str | None]:
    """Encoded image bytes (PNG, JPEG, TIFF, BMP, PGM, ...) → 8-bit grayscale, or the reason it failed."""
    if not data:
        return None, "empty file"
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return None, "cannot decode image (not a readable PNG/JPEG/TIFF/BMP file)"
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3:
        code = {1: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(img.shape[2])
        img = img[:, :, 0] if code is None else cv2.cvtColor(img, code)
    return np.ascontiguousarray(img), None


def _detection_view(gray: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Image the cascades see: small faces upscaled and padded (a tight crop has no margin for the
    detector window), large photos downscaled. Returns (view, scale, pad)."""
    h, w = gray.shape
    scale = 1.0
    if min(h, w) < _DETECT_MIN:
        scale = _DETECT_MIN / min(h, w)
    elif max(h, w) > _DETECT_MAX:
        scale = _DETECT_MAX / max(h, w)
    view = gray
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        view = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    pad = round(min(view.shape) / 6) if scale > 1 else 0
    if pad:
        view = cv2.copyMakeBorder(view, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return view, scale, pad


def _largest(boxes: np.ndarray | tuple) -> tuple[int, int, int, int] | None:
    if len(boxes) == 0:
        return None
    b = sorted((tuple(int(v) for v in box) for box in boxes), key=lambda r: (-r[2] * r[3], r[1], r[0]))
    return b[0]


def _face_boxes(view: np.ndarray) -> np.ndarray | tuple:
    """Every frontal face the Viola–Jones cascade finds in a detection view (view coordinates)."""
    side = min(view.shape)
    return _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        view, scaleFactor=1.1, minNeighbors=4, minSize=(side // 5, side // 5)
    )


def _to_image(box: tuple[int, int, int, int], scale: float, pad: int) -> tuple[int, int, int, int]:
    """A detection-view box back in the original image's pixels."""
    x, y, w, h = box
    return (
        round((x - pad) / scale),
        round((y - pad) / scale),
        max(1, round(w / scale)),
        max(1, round(h / scale)),
    )


def detect_face(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest frontal face (x, y, w, h) in ``gray``'s coordinates, or None."""
    view, scale, pad = _detection_view(gray)
    box = _largest(_face_boxes(view))
    return None if box is None else _to_image(box, scale, pad)


def _distinct(boxes: np.ndarray | tuple) -> list[tuple[int, int, int, int]]:
    """Boxes largest first, without those lying mostly (> half their area) inside a larger kept box."""
    kept: list[tuple[int, int, int, int]] = []
    for b in sorted((tuple(int(v) for v in box) for box in boxes), key=lambda r: (-r[2] * r[3], r[1], r[0])):
        x, y, w, h = b
        inside = (
            max(0, min(x + w, k[0] + k[2]) - max(x, k[0])) * max(0, min(y + h, k[1] + k[3]) - max(y, k[1]))
            for k in kept
        )
        if all(a <= 0.5 * w * h for a in inside):
            kept.append(b)
    return kept


def detect_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Every frontal face (x, y, w, h) in ``gray``'s coordinates, largest first (``detect_face`` is the
    first one); a detection mostly inside a larger one is dropped. Empty when there is no face."""
    view, scale, pad = _detection_view(gray)
    return [_to_image(b, scale, pad) for b in _distinct(_face_boxes(view))]


@dataclass(frozen=True)
class Face:
    """One face a detector found, in the image's pixels: its box (x, y, w, h), FER2013's square about it
    (x, y, side, side; it may reach past the image), YuNet's five landmarks (right eye, left eye, nose tip,
    right and left mouth corner; None from Haar) and which detector found it."""

    box: Box
    square: Box
    landmarks: tuple[Point, ...] | None
    detector: str


@cache
def _yunet():
    """yuface's ``detect`` (libfacedetection's YuNet, its weights compiled into the wheel), or None."""
    try:
        from yuface import detect
    except ImportError:
        return None
    return detect


def default_detector() -> str:
    """The detector ``predict`` and ``serve`` use: YuNet refined by Haar where YuNet's wheel is installed,
    else Haar."""
    return "yunet+haar" if _yunet() is not None else "haar"


def landmark_scale(landmarks: tuple[Point, ...]) -> tuple[Point, float]:
    """(the eyes' midpoint, ``s``): the face's scale as the mean of the eye distance and the distance from
    the eyes' midpoint to the mouth's. Either alone shrinks as the head turns or nods; their mean less."""
    (rx, ry), (lx, ly), _, (mrx, mry), (mlx, mly) = landmarks
    eye = ((rx + lx) / 2, (ry + ly) / 2)
    mouth = ((mrx + mlx) / 2, (mry + mly) / 2)
    return eye, (hypot(rx - lx, ry - ly) + hypot(mouth[0] - eye[0], mouth[1] - eye[1])) / 2


def square_about(cx: float, cy: float, side: float) -> Box:
    """The square of ``side`` (rounded, at least 1 px) centred on (cx, cy), as (x, y, side, side)."""
    side = max(1, round(side))
    return (round(cx - side / 2), round(cy - side / 2), side, side)


def _yunet_faces(view: np.ndarray) -> list[tuple[Box, tuple[Point, ...]]]:
    """YuNet's faces in a detection view: (box, five landmarks) in view coordinates."""
    confs, boxes, marks = _yunet()(cv2.cvtColor(view, cv2.COLOR_GRAY2BGR), conf=YUNET_MIN_SCORE)
    return [
        (tuple(int(v) for v in b), tuple((float(m[2 * i]), float(m[2 * i + 1])) for i in range(5)))
        for b, m in zip(boxes, marks, strict=True)
    ]


def _haar_framed(view: np.ndarray, scale: float, pad: int) -> list[tuple[Box, tuple[float, float, float]]]:
    """Haar's faces (image pixels) with FER2013's square about each: (box, (centre x, centre y, side))."""
    out = []
    for b in _distinct(_face_boxes(view)):
        x, y, w, h = _to_image(b, scale, pad)
        out.append(((x, y, w, h), (x + w / 2, y + h / 2, max(w, h) * FACE_BOX_SCALE)))
    return out


def find_faces(gray: np.ndarray, detector: str | None = None) -> list[Face]:
    """Every face in ``gray``, largest first (a detection mostly inside a larger one dropped), each with
    FER2013's square about it: the one face detection of ``predict`` and ``serve``. ``detector``: ``haar``
    (Viola–Jones, the square 1.02× its box), ``yunet`` (YuNet finds the faces, the square from its eyes
    and mouth), ``yunet+haar`` (YuNet finds them; where Haar finds the same face the square is the mean of
    both: on 300 CK+ faces pasted into photos its side is off by 3.3% sd against Haar's 3.9% and YuNet's
    5.0%, ``benchmarks/face_framing.py``), None: :func:`default_detector`."""
    detector = detector or default_detector()
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    view, scale, pad = _detection_view(gray)
    haar = _haar_framed(view, scale, pad) if detector in ("haar", "yunet+haar") else []
    if detector == "haar":
        return [Face(box, square_about(*sq), None, "haar") for box, sq in haar]
    if _yunet() is None:
        raise RuntimeError(f"the {detector} detector needs the yuface package (pip install yuface)")
    found = dict(_yunet_faces(view))
    out = []
    fx, fy, fs = YUNET_FRAMING
    for b in _distinct(list(found)):
        box = _to_image(b, scale, pad)
        marks = tuple(((px - pad) / scale, (py - pad) / scale) for px, py in found[b])
        eye, s = landmark_scale(marks)
        sq = (eye[0] + fx * s, eye[1] + fy * s, fs * s)
        x, y, w, h = box
        same = [hs for _, hs in haar if x <= hs[0] <= x + w and y <= hs[1] <= y + h]
        if same:  # Haar's square of this face: the nearest whose centre lies in YuNet's box
            hs = min(same, key=lambda q: hypot(q[0] - sq[0], q[1] - sq[1]))
            sq = tuple((a + b) / 2 for a, b in zip(sq, hs, strict=True))
        out.append(Face(box, square_about(*sq), marks, detector))
    return out


def face_roi(gray: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray | None, int]:
    """Paper 000's face ROI: Viola–Jones face, then eyes and mouth inside it; the crop spans the eyes
    horizontally and eyes-to-mouth vertically, widened by ``margin``. Eyes / mouth the cascades miss
    fall back to their usual place in the face box. Returns (crop or None when no face, FACE|EYES|MOUTH).
    """
    view, scale, pad = _detection_view(gray)
    face = _largest(_face_boxes(view))
    if face is None:
        return None, 0
    crop, flags, _ = _roi_of(gray, view, scale, pad, face, margin)
    return crop, flags


def _roi_of(
    gray: np.ndarray, view: np.ndarray, scale: float, pad: int, face: tuple[int, int, int, int], margin: float
) -> tuple[np.ndarray | None, int, tuple[int, int, int, int] | None]:
    """``face_roi``'s crop of one face box (view coordinates): (crop | None, flags, crop box x, y, w, h)."""
    fx, fy, fw, fh = face
    flags = FACE
    upper = view[fy : fy + int(0.6 * fh), fx : fx + fw]
    eyes = _cascade("haarcascade_eye.xml").detectMultiScale(
        upper, scaleFactor=1.1, minNeighbors=4, minSize=(fw // 9, fw // 9), maxSize=(fw // 2, fw // 2)
    )
    left = _largest([e for e in eyes if e[0] + e[2] / 2 < fw / 2])
    right = _largest([e for e in eyes if e[0] + e[2] / 2 >= fw / 2])
    if left is not None and right is not None:
        flags |= EYES
        x0, x1 = fx + left[0], fx + right[0] + right[2]
        y0 = fy + min(left[1], right[1])
    else:
        x0, x1, y0 = fx + 0.15 * fw, fx + 0.85 * fw, fy + 0.22 * fh
    top = fy + int(0.55 * fh)
    mouths = _cascade("haarcascade_smile.xml").detectMultiScale(
        view[top : fy + fh, fx : fx + fw], scaleFactor=1.1, minNeighbors=12, minSize=(fw // 5, fh // 12)
    )
    central = [m for m in mouths if abs(m[0] + m[2] / 2 - fw / 2) < fw / 5]
    mouth = _largest(central)
    if mouth is not None:
        flags |= MOUTH
        y1 = top + mouth[1] + mouth[3]
    else:
        y1 = fy + 0.88 * fh
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = gray.shape
    box = [(v - pad) / scale for v in (x0 - mx, y0 - my, x1 + mx, y1 + my)]
    cx0, cy0 = max(0, int(box[0])), max(0, int(box[1]))
    cx1, cy1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if cx1 - cx0 < 4 or cy1 - cy0 < 4:
        return None, 0, None
    return gray[cy0:cy1, cx0:cx1], flags, (cx0, cy0, cx1 - cx0, cy1 - cy0)


@dataclass(frozen=True)
class FaceROI:
    """One face of ``face_rois``: the detector's box and the ROI crop, both (x, y, w, h) in the image's
    pixels (the face box clipped to the image), the crop itself and its FACE|EYES|MOUTH flags."""

    box: tuple[int, int, int, int]
    roi: tuple[int, int, int, int]
    crop: np.ndarray
    flags: int


def face_rois(gray: np.ndarray, margin: float = 0.1) -> list[FaceROI]:
    """``face_roi`` for every face ``detect_faces`` finds (same detection view, same crop rule), in
    reading order (left to right, then top to bottom). Empty when there is no face."""
    view, scale, pad = _detection_view(gray)
    h, w = gray.shape
    out = []
    for face in _distinct(_face_boxes(view)):
        crop, flags, roi = _roi_of(gray, view, scale, pad, face, margin)
        if crop is None or roi is None:
            continue
        x, y, bw, bh = _to_image(face, scale, pad)
        x0, y0 = min(max(0, x), w - 1), min(max(0, y), h - 1)
        box = (x0, y0, max(1, min(w, x + bw) - x0), max(1, min(h, y + bh) - y0))
        out.append(FaceROI(box, roi, crop, flags))
    return sorted(out, key=lambda f: (f.box[0], f.box[1]))


def wants_roi(cfg: PreprocessConfig, height: int, width: int) -> bool:
    return cfg.roi == "face" or (cfg.roi == "auto" and min(height, width) > 2 * cfg.size)


def finish(gray: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Resize to ``cfg.size`` square and equalise."""
    h, w = gray.shape
    if (h, w) != (cfg.size, cfg.size):
        interp = cv2.INTER_AREA if h > cfg.size or w > cfg.size else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (cfg.size, cfg.size), interpolation=interp)
    if cfg.equalize == "hist":
        gray = cv2.equalizeHist(gray)
    elif cfg.equalize == "clahe":
        tiles = max(2, cfg.size // 12)
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles)).apply(gray)
    return np.ascontiguousarray(gray)


def preprocess(gray: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray | None, int, str | None]:
    """One grayscale image → (``size``×``size`` image | None, ROI flags, no-face reason | None)."""
    flags = 0
    if wants_roi(cfg, *gray.shape):
        crop, flags = face_roi(gray, cfg.roi_margin)
        if crop is None:
            return None, 0, "no face found by the Viola-Jones detector"
        gray = crop
    return finish(gray, cfg), flags, None


def augment(img: np.ndarray, angle: float, zoom: float, mirror: bool) -> np.ndarray:
    """Rotate by ``angle`` degrees and zoom in by ``zoom`` about the centre, then mirror horizontally."""
    h, w = img.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(angle), float(zoom))
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(out[:, ::-1]) if mirror else out
