"""Synthetic FER2013 stand-in: drawn 48x48 grayscale faces written in the Kaggle ``fer2013.csv`` layout.

The real dataset cannot be redistributed, so tests, CI and first-time users get an embedded default that
exercises the same ingestion path (header, pixel strings, Usage blocks, class imbalance). Faces are drawn
with OpenCV primitives; expression cues follow FACS-style prototypes (brows, eyes, mouth, wrinkles) with
per-face intensity, pose, lighting and noise so that the task is learnable but not trivial.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
from pathlib import Path

import cv2
import numpy as np

from data_pipeline.dataset import CLASSES

USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
HEADER = "emotion,pixels,Usage"
SIDE = 48
MIN_ROWS = 30
# FER2013 Training-split class frequencies.
CLASS_PROPORTIONS = np.array([0.139, 0.015, 0.143, 0.251, 0.168, 0.110, 0.173])
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# The default set is regenerated at run start: level 1 is ~8x faster than 6 for ~20% more bytes.
GZIP_LEVEL = 1

_CANVAS = 128
_WORK = 96
_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

_P = {name: i for i, name in enumerate((
    "brow_raise", "brow_tilt", "eye_open", "cheek", "mouth_w", "mouth_curv", "mouth_open", "lower_frac",
    "roundness", "asym", "teeth", "nasolabial", "nose_wrinkle", "glabella", "forehead",
))}
# Prototype per class in canvas pixels (face ~72 px wide). brow_tilt > 0 lifts the inner brow ends,
# mouth_curv > 0 lifts the mouth corners.
_PROTOTYPES = np.array([
    # raise tilt  eye  cheek  mw  curv  open lowf round asym teeth naso nosew glab fore
    [-4.0, -7.0, 3.4, 0.0, 10.0, -1.5, 0.0, 0.5, 0.6, 0.0, 0.3, 0.0, 0.2, 1.0, 0.0],   # Angry
    [-3.0, -3.0, 2.8, 0.6, 11.0, -2.5, 1.5, 0.3, 0.5, 4.5, 0.6, 0.3, 1.0, 0.3, 0.0],   # Disgust
    [5.0, 4.5, 7.0, 0.0, 15.0, -2.0, 7.0, 0.6, 0.25, 0.0, 0.8, 0.0, 0.0, 0.2, 0.5],    # Fear
    [0.5, 0.0, 3.6, 1.0, 15.0, 6.0, 3.0, 0.75, 0.7, 0.0, 0.7, 1.0, 0.0, 0.0, 0.0],     # Happy
    [1.0, 5.0, 4.2, 0.0, 11.0, -5.0, 0.0, 0.5, 0.6, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2],     # Sad
    [7.0, 1.0, 7.8, 0.0, 7.0, 0.0, 10.0, 0.5, 0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0],      # Surprise
    [0.0, 0.0, 5.0, 0.0, 12.0, 0.0, 0.0, 0.5, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # Neutral
])
_JITTER = np.array([1.5, 1.5, 0.8, 0.2, 1.5, 1.2, 1.0, 0.1, 0.1, 1.0, 0.25, 0.2, 0.2, 0.2, 0.2])
_LOWER = np.array([-9.0, -10.0, 1.2, 0.0, 5.0, -9.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
_UPPER = np.array([10.0, 9.0, 9.5, 1.5, 19.0, 9.0, 13.0, 0.9, 1.2, 7.0, 1.0, 1.5, 1.5, 1.5, 1.5])
# Classes people (and models) confuse; a share of faces is pulled part-way towards one of them.
_NEIGHBOURS = {0: (1, 4), 1: (0, 4), 2: (5, 4), 3: (6,), 4: (6, 2), 5: (2,), 6: (4, 3)}
_BLEND_P = 0.25

_GRID_Y, _GRID_X = np.mgrid[-1:1:SIDE * 1j, -1:1:SIDE * 1j].astype(np.float32)
_PIXEL_STR = [str(v) for v in range(256)]
_MOUTH_X = np.linspace(-1.0, 1.0, 15)
_MOUTH_X2 = _MOUTH_X**2
_MOUTH_BULGE = 1 - _MOUTH_X2
_SNARL = {side: np.clip(side * _MOUTH_X, 0, 1) * (1 - np.abs(_MOUTH_X)) * 4 for side in (-1, 1)}


class _Uniform:
    """Scalar uniforms served from one vectorised draw: a Generator method call costs ~1.5 us each."""

    __slots__ = ("rng", "_buf")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf: list[float] = []

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self._buf:
            self._buf = self.rng.random(64).tolist()
        return lo + (hi - lo) * self._buf.pop()

    def sign(self) -> int:
        return 1 if self() < 0.5 else -1


def _expression(emotion: int, u: _Uniform) -> np.ndarray:
    """Sample one face's expression parameters: prototype, scaled intensity, neighbour blend, jitter."""
    base = _PROTOTYPES[emotion].copy()
    if emotion == 0 and u() < 0.2:
        base[[_P["mouth_open"], _P["teeth"], _P["roundness"]]] = (6.0, 1.0, 0.3)
    elif emotion == 3:
        base[_P["mouth_open"]] = u(0.0, 8.0)
    if u() < _BLEND_P:
        other = _PROTOTYPES[_NEIGHBOURS[emotion][int(u(0, len(_NEIGHBOURS[emotion])))]]
        base += u(0.15, 0.5) * (other - base)
    neutral = _PROTOTYPES[6]
    params = neutral + u(0.5, 1.15) * (base - neutral)
    params += _JITTER * u.rng.standard_normal(len(_JITTER))
    return np.clip(params, _LOWER, _UPPER)


def _fx(points) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) * _ONE + 0.5).astype(np.int32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(x * _ONE), int(y * _ONE)


def _ellipse(img, cx, cy, ax, ay, color, thickness=-1, angle=0.0, start=0, end=360, line=_AA) -> None:
    cv2.ellipse(img, (int(cx * _ONE), int(cy * _ONE)), (int(ax * _ONE), int(ay * _ONE)), angle, start, end,
                int(color), thickness, line, _SHIFT)


def _line(img, points, color, thickness=1) -> None:
    cv2.polylines(img, [_fx(points)], False, int(color), thickness, _AA, _SHIFT)


def _background(u: _Uniform) -> np.ndarray:
    """Out-of-focus clutter so the face boundary is not a constant contrast step (drawn small, upsampled)."""
    small = np.full((32, 32), u(15, 235), np.uint8)
    for _ in range(int(u(0, 4))):
        x, y = u(0, 32), u(0, 32)
        w, h = u(3, 15), u(3, 15)
        color = int(u(0, 255))
        if u() < 0.5:
            cv2.rectangle(small, (int(x), int(y)), (int(x + w), int(y + h)), color, -1)
        else:
            cv2.circle(small, (int(x), int(y)), int(w / 2), color, -1)
    return cv2.resize(small, (_CANVAS, _CANVAS), interpolation=cv2.INTER_CUBIC)


def _draw_head(img: np.ndarray, p: np.ndarray, u: _Uniform) -> None:
    """Draw head, hair and expression features in canonical pose (face centre at canvas (64, 64))."""
    c = 64.0
    skin = u(95, 215)
    hair = u(10, 90) if u() < 0.85 else u(140, 200)
    fa, fb = 36.0 * u(0.9, 1.05), 46.0 * u(0.92, 1.05)
    fy = c + u(-1.5, 1.5)
    has_hair = u() < 0.9

    if has_hair and u() < 0.35:
        _ellipse(img, c, fy + 14, fa + 9, fb + 22, hair, line=cv2.LINE_8)
    _ellipse(img, c + u(-6, 6), 150, 72, 42, u(10, 230), line=cv2.LINE_8)
    cv2.rectangle(img, _pt(c - 15, fy + 20), _pt(c + 15, _CANVAS), int(skin * 0.82), -1, cv2.LINE_8, _SHIFT)
    if has_hair:
        _ellipse(img, c, fy - 6, fa + 4, fb - 2, hair, line=cv2.LINE_8)
    for side in (-1, 1):
        _ellipse(img, c + side * fa, fy - 6, 5, 9, skin * 0.9)
    _ellipse(img, c, fy, fa, fb, skin, line=cv2.LINE_8)
    _ellipse(img, c, fy, fa, fb, skin * 0.82, 2)
    hairline = fy - 36 + u(-4, 5)
    if has_hair:
        _draw_fringe(img, u, c, fy - fb, hairline, fa, hair, skin)

    ex_off, ey = u(14.5, 17.5), fy - 12 + u(-2, 2)
    ew, eo = u(6.0, 7.5), p[_P["eye_open"]]
    dark = skin * u(0.12, 0.3)
    sclera = min(255.0, skin + u(25, 60))
    gaze = u(-1.5, 1.5)
    brow_color = min(hair, skin * 0.45)
    brow_t = int(u(3, 6))
    raise_, tilt = p[_P["brow_raise"]], p[_P["brow_tilt"]]
    brow_y = ey - 10 - raise_
    inner_x = 5.5 + 0.15 * min(tilt, 0)
    cheek = p[_P["cheek"]]
    for side in (-1, 1):
        ex = c + side * ex_off
        _ellipse(img, ex, ey - 1, ew + 3, eo + 3, skin * 0.86)
        _ellipse(img, ex, ey, ew, eo, sclera)
        _ellipse(img, ex + gaze, ey, min(3.6, eo + 0.3), min(3.6, eo + 0.3), dark)
        _ellipse(img, ex, ey, ew, eo, dark, 2, 0, 180, 360)
        if cheek > 0.3:
            _ellipse(img, ex, ey + eo + 3, ew, 2.5 * cheek, skin * 0.78, 1, 0, 180, 360)
        xi, xo = c + side * inner_x, c + side * (ex_off + ew + 2)
        yi, yo = brow_y - tilt / 2, brow_y + tilt / 2
        arch = 2.0 + 0.3 * max(raise_, 0)
        _line(img, [(xi, yi), ((xi + xo) / 2, (yi + yo) / 2 - arch), (xo, yo)], brow_color, brow_t)

    ny = ey + 17
    for side in (-1, 1):
        _ellipse(img, c + side * 4, ny, 2.2, 1.3, skin * 0.55)
    _ellipse(img, c, ny - 1, 7, 3, skin * 0.75, 1, 0, 0, 180)
    bridge = u.sign()
    _line(img, [(c + bridge * 4, ey + 2), (c + bridge * 6, ny - 3)], skin * 0.88, 2)

    mx, my = c + u(-1, 1), ey + 33 + u(-2, 2)
    _draw_mouth(img, p, u, skin, mx, my)

    if p[_P["nasolabial"]] > 0.25:
        mw, curv = p[_P["mouth_w"]], p[_P["mouth_curv"]]
        shade = skin * (1 - 0.25 * min(p[_P["nasolabial"]], 1.2))
        for side in (-1, 1):
            _line(img, [(c + side * 9, ny - 2), (c + side * (mw + 2), my - 4 - 0.5 * curv),
                        (c + side * (mw + 3), my + 3)], shade, 1)
    if p[_P["glabella"]] > 0.3:
        for side in (-1, 1):
            _line(img, [(c + side * 2.5, brow_y - 3), (c + side * 2, brow_y + 6)],
                  skin * (1 - 0.25 * p[_P["glabella"]]), 1)
    if p[_P["nose_wrinkle"]] > 0.3:
        for side in (-1, 1):
            for k in (0, 3):
                _line(img, [(c + side * 5, ey + 3 + k), (c + side * 8, ey + 6 + k)],
                      skin * (1 - 0.3 * p[_P["nose_wrinkle"]]), 1)
    if p[_P["forehead"]] > 0.3:
        for k in (1, 2, 3):
            y = brow_y - 3 - 5 * k
            if y > hairline + 2:
                _line(img, [(c - 16, y + 1.5), (c, y), (c + 16, y + 1.5)],
                      skin * (1 - 0.2 * p[_P["forehead"]]), 1)


def _draw_fringe(img: np.ndarray, u: _Uniform, c: float, top: float, hairline: float, fa: float, hair: float,
                 skin: float) -> None:
    """Straight or side-parted fringe, rounded bangs, or an arched hairline."""
    style = u()
    if style < 0.4:
        _ellipse(img, c, hairline, fa + 2, hairline - top + 6, hair, -1, u(-8, 8), 180, 360)
    elif style < 0.7:
        bottom, crown = hairline + 3, top - 4
        cy, ay = (crown + bottom) / 2, (bottom - crown) / 2
        _ellipse(img, c + u(-4, 4), cy, fa * 0.95, ay, hair, -1, u(-10, 10))
    else:
        _ellipse(img, c, hairline - 2, fa + 2, hairline - top + 4, hair, -1, 0, 180, 360)
        _ellipse(img, c, hairline + 1, fa * u(0.5, 0.7), u(5, 8), skin, -1, 0, 180, 360)


def _draw_mouth(img: np.ndarray, p: np.ndarray, u: _Uniform, skin: float, mx: float,
                my: float) -> None:
    """Mouth as a centre curve (corner lift, one-sided snarl) opened into upper and lower lip curves."""
    opening = p[_P["mouth_open"]]
    snarl = p[_P["asym"]] * _SNARL[u.sign()]
    xs = mx + p[_P["mouth_w"]] * _MOUTH_X
    y0 = my - p[_P["mouth_curv"]] * _MOUTH_X2 - 0.3 * snarl
    lip = skin * u(0.3, 0.5)
    if opening <= 1.2:
        _line(img, np.stack([xs, y0 - 0.5 * snarl], 1), lip, int(u(2, 4)))
        _line(img, np.stack([xs[3:-3], y0[3:-3] + 4 - 0.3 * _MOUTH_X2[3:-3]], 1), skin * 0.85, 2)
        return
    shape = _MOUTH_BULGE ** p[_P["roundness"]]
    lower_frac = p[_P["lower_frac"]]
    y_up = y0 - opening * (1 - lower_frac) * shape - snarl
    y_lo = y0 + opening * lower_frac * shape
    loop = np.empty((2 * len(xs), 2))
    loop[:, 0] = np.concatenate([xs, xs[::-1]])
    loop[:, 1] = np.concatenate([y_up, y_lo[::-1]])
    outline = [_fx(loop)]
    cv2.fillPoly(img, outline, int(u(15, 45)), _AA, _SHIFT)
    if p[_P["teeth"]] > 0.5 and opening > 2.5:
        loop[len(xs):, 1] = np.minimum(y_up + min(0.45 * opening, 4.5) * shape, y_lo)[::-1]
        cv2.fillPoly(img, [_fx(loop)], int(u(170, 235)), _AA, _SHIFT)
    cv2.polylines(img, outline, True, int(skin * 0.55), 2, _AA, _SHIFT)


def draw_face(emotion: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one 48x48 uint8 face showing ``CLASSES[emotion]`` with random identity, pose and lighting."""
    if not 0 <= emotion < len(CLASSES):
        raise ValueError(f"emotion must be in 0..{len(CLASSES) - 1}, got {emotion}")
    u = _Uniform(rng)
    params = _expression(emotion, u)
    canvas = _background(u)
    _draw_head(canvas, params, u)

    half = _CANVAS / 2
    m = cv2.getRotationMatrix2D((half, half), u(-15, 15), u(0.85, 1.15))
    m[:, 2] += (_WORK / 2 - half + u(-8, 8), _WORK / 2 + 2 - half + u(-8, 8))
    work = cv2.warpAffine(canvas, m, (_WORK, _WORK), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if u() < 0.4:
        work = cv2.GaussianBlur(work, (0, 0), u(0.5, 1.5))
    img = cv2.resize(work, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)

    light = u(-35, 35) * _GRID_X + (u(-35, 35) * _GRID_Y + (128 + u(-30, 30)))
    img = (img - 128) * u(0.7, 1.2) + light
    img += u.rng.standard_normal(img.shape, dtype=np.float32) * u(0, 8)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out[:, ::-1].copy() if u() < 0.5 else out


def _split_sizes(n_rows: int) -> tuple[int, int, int]:
    n_test = round(n_rows * SPLIT_FRACTIONS[1])
    return n_rows - 2 * n_test, n_test, n_test


def _split_labels(size: int, rng: np.random.Generator) -> np.ndarray:
    """Class counts by largest remainder (exact proportions, one of each class whenever it fits), shuffled."""
    counts = np.full(len(CLASSES), 1 if size >= len(CLASSES) else 0)
    quota = CLASS_PROPORTIONS / CLASS_PROPORTIONS.sum() * (size - counts.sum())
    counts += np.floor(quota).astype(int)
    short = size - counts.sum()
    counts[np.argsort(-(quota - np.floor(quota)), kind="stable")[:short]] += 1
    return rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), counts))


def generate(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n_rows`` faces: uint8 images (n, 48, 48), int64 labels, Usage strings in Kaggle block order."""
    if n_rows < MIN_ROWS:
        raise ValueError(f"n_rows must be >= {MIN_ROWS} so every split gets rows, got {n_rows}")
    rng = np.random.default_rng(seed)
    sizes = _split_sizes(n_rows)
    labels = np.concatenate([_split_labels(size, rng) for size in sizes])
    images = np.empty((n_rows, SIDE, SIDE), np.uint8)
    for i, label in enumerate(labels):
        images[i] = draw_face(int(label), rng)
    usage = np.repeat(np.array(USAGES), sizes)
    return images, labels, usage


def _write_rows(f: io.TextIOBase, images: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> None:
    f.write(HEADER + "\n")
    for image, label, split in zip(images.reshape(len(images), -1).tolist(), labels.tolist(), usage.tolist(),
                                   strict=True):
        f.write(f"{label},{' '.join([_PIXEL_STR[v] for v in image])},{split}\n")


def write_fer2013_csv(path: str | Path, n_rows: int = 6000, seed: int = 0) -> Path:
    """Write a synthetic ``fer2013.csv`` (gzip if the name ends in ``.gz``); same seed, identical bytes."""
    path = Path(path)
    images, labels, usage = generate(n_rows, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            if path.suffix == ".gz":
                # gzip.open cannot pin mtime; filename="" keeps the header independent of the path too.
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0)
                with gz, io.TextIOWrapper(gz, encoding="ascii", newline="\n") as f:
                    _write_rows(f, images, labels, usage)
            else:
                with io.TextIOWrapper(raw, encoding="ascii", newline="\n") as f:
                    _write_rows(f, images, labels, usage)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m data_pipeline.synth out.csv[.gz]``: materialise the default dataset by hand."""
    parser = argparse.ArgumentParser(description="Write a synthetic FER2013-layout CSV.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_fer2013_csv(args.path, args.rows, args.seed))


if __name__ == "__main__":
    main()
