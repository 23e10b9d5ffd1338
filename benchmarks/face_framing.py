"""Where FER2013 frames a face, in each detector's terms: the constants a raw photo is cropped by.

FER2013's images are faces cropped by a face detector. For a photo to be cropped the same way, each
detector's output has to be mapped onto that framing: Haar's box is scaled about its centre
(``FACE_BOX_SCALE``); YuNet's five landmarks give the square's centre and side in units of the face's scale
``s`` = (eye distance + eye-to-mouth distance) / 2 (``YUNET_FRAMING``; other units are compared beside it).
Fitted (medians) on the first half of the Training images both detectors find, then checked on the second
half: how far the predicted square lies from the image's own (side ratio and centre offset as a share of
the side, sd and 90th percentile). Reads Training pixels only.

    python -m benchmarks.face_framing --data ../shared/data/fer2013.csv.gz --n 4000
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

from data_pipeline import preprocess as pp


def training_faces(path: Path, n: int) -> list[np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["Usage"] == "Training":
                out.append(np.array(row["pixels"].split(), np.uint8).reshape(48, 48))
                if len(out) == n:
                    break
    return out


def terms(gray: np.ndarray) -> dict[str, tuple[float, float, float]] | None:
    """Per framing rule, (centre x, centre y, side) of the image's own square in that rule's units, or None
    unless both detectors find the face (so the rules are compared on the same faces). Haar: from the box's
    centre in units of its side. YuNet's landmarks: from the eyes' midpoint in units of ``s``
    (:func:`landmark_scale`), of the eye distance alone, of the eye-to-mouth distance alone; YuNet's box: from
    its centre in units of its longer side."""
    haar, yunet = pp.find_faces(gray, "haar"), pp.find_faces(gray, "yunet")
    if not haar or not yunet:
        return None
    x, y, w, h = haar[0].box
    out = {"haar box": ((24 - (x + w / 2)) / max(w, h), (24 - (y + h / 2)) / max(w, h), 48 / max(w, h))}
    marks = yunet[0].landmarks
    (rx, ry), (lx, ly), _, (mrx, mry), (mlx, mly) = marks
    mid, s = pp.landmark_scale(marks)
    eyes = np.hypot(rx - lx, ry - ly)
    mouth = np.hypot((mrx + mlx) / 2 - mid[0], (mry + mly) / 2 - mid[1])
    for name, unit in (("yunet landmarks s", s), ("yunet eye distance", eyes), ("yunet eye-mouth", mouth)):
        out[name] = ((24 - mid[0]) / unit, (24 - mid[1]) / unit, 48 / unit)
    x, y, w, h = yunet[0].box
    out["yunet box"] = ((24 - (x + w / 2)) / max(w, h), (24 - (y + h / 2)) / max(w, h), 48 / max(w, h))
    return out


def fit_and_check(terms: list[tuple[float, float, float]]) -> dict:
    t = np.array(terms)
    half = len(t) // 2
    fit = np.median(t[:half], axis=0)
    check = t[half:]
    # predicted square against the truth (48 px about the image centre), in shares of the true side
    side_ratio = fit[2] / check[:, 2]
    offset = np.hypot(check[:, 0] - fit[0], check[:, 1] - fit[1]) / check[:, 2]
    return {
        "fit": [round(float(v), 4) for v in fit],
        "side_sd": round(float(np.std(np.log(side_ratio))), 4),
        "side_p90": round(float(np.percentile(np.abs(np.log(side_ratio)), 90)), 4),
        "offset_mean": round(float(np.mean(offset)), 4),
        "offset_p90": round(float(np.percentile(offset, 90)), 4),
        "found": len(terms),
    }


#: YuNet's box framed as FER2013 frames a face: (centre x, centre y, side) in units of its longer side,
#: fitted by ``--data`` ("yunet box"); compared beside the rules ``data_pipeline.preprocess`` uses.
YUNET_BOX_FRAMING = (0.0108, -0.0104, 0.9412)


def _centred(square: tuple[int, int, int, int]) -> np.ndarray:
    x, y, side, _ = square
    return np.array([x + side / 2, y + side / 2, side], float)


def rules(img: np.ndarray) -> dict[str, np.ndarray]:
    """(centre x, centre y, side) of FER2013's square by each rule that finds the face: Haar's box, YuNet's
    landmarks, YuNet's box, and the means of two or three of them."""
    haar, yunet = pp.find_faces(img, "haar"), pp.find_faces(img, "yunet")
    out = {}
    if haar:
        out["haar"] = _centred(haar[0].square)
    if yunet:
        out["yunet landmarks"] = _centred(yunet[0].square)
        x, y, w, h = yunet[0].box
        fx, fy, fs = YUNET_BOX_FRAMING
        side = max(w, h)
        out["yunet box"] = np.array([x + w / 2 + fx * side, y + h / 2 + fy * side, fs * side])
    if haar and yunet:
        out["mean haar + landmarks"] = (out["haar"] + out["yunet landmarks"]) / 2
        out["mean haar + yunet box"] = (out["haar"] + out["yunet box"]) / 2
        out["mean of the three"] = (out["haar"] + out["yunet landmarks"] + out["yunet box"]) / 3
    return out


def pasted_framing(tar: Path, n: int, seed: int = 0) -> dict[str, dict]:
    """Each rule's FER2013 square against the exact square of a CK+ face pasted into a photo
    (``benchmarks.crop_agreement``'s photos): found share, side error (mean and sd of the log ratio) and
    centre offset (share of the side)."""
    from benchmarks.crop_agreement import ck_faces, photo

    rng = np.random.default_rng(seed)
    errors: dict[str, list[tuple[float, float]]] = {}
    faces = ck_faces(tar, n, seed)
    for _, face in faces:
        img, (x, y, side) = photo(face, rng, where=True)
        for name, (cx, cy, fs) in rules(img).items():
            off = np.hypot(cx - (x + side / 2), cy - (y + side / 2)) / side
            errors.setdefault(name, []).append((float(np.log(fs / side)), float(off)))
    out = {}
    for name, e in errors.items():
        a = np.array(e)
        out[name] = {"found": len(e) / len(faces), "side_sd": float(np.std(a[:, 0])),
                     "side_bias": float(np.mean(a[:, 0])), "offset_mean": float(np.mean(a[:, 1])),
                     "offset_p90": float(np.percentile(a[:, 1], 90))}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="FER2013 CSV: fit and check the framings on Training images")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--ckplus", type=Path, help="CK+ tar: each detector's square against pasted faces")
    ap.add_argument("--n-ckplus", type=int, default=300)
    args = ap.parse_args()
    if args.ckplus:
        for name, r in pasted_framing(args.ckplus, args.n_ckplus).items():
            print(
                f"CK+ pasted, {name:<21}: found {100 * r['found']:.1f}%; side {100 * r['side_bias']:+.1f}% "
                f"on average, {100 * r['side_sd']:.1f}% sd; centre off by {100 * r['offset_mean']:.1f}% "
                f"of the side on average ({100 * r['offset_p90']:.1f}% at p90)"
            )
    if not args.data:
        return
    faces = training_faces(args.data, args.n)
    found = [t for t in map(terms, faces) if t is not None]
    print(f"both detectors found the face in {len(found)} of {len(faces)} Training images")
    for name in found[0]:
        r = fit_and_check([t[name] for t in found])
        print(
            f"{name:<19} framing (centre x, centre y, side) {r['fit']}; held-out half: side off by "
            f"{100 * r['side_sd']:.1f}% sd ({100 * r['side_p90']:.1f}% at p90), centre off by "
            f"{100 * r['offset_mean']:.1f}% of the side on average ({100 * r['offset_p90']:.1f}% at p90)"
        )
    for name in ("haar", "yunet"):
        hits = sum(bool(pp.find_faces(f, name)) for f in faces[:1000])
        print(f"{name}: a face found in {hits} of the first {min(1000, len(faces))} Training images")


if __name__ == "__main__":
    main()
