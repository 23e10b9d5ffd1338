"""Serve-time crops against training crops: does a face in a photo get the class its 48×48 crop gets?

Real CK+ faces (``CK+48/``, whole-face crops like FER2013's) are each classified twice by an exported
ensemble: as the 48×48 crop itself, and pasted (upscaled) into a larger photo that ``fersearch predict``
must find and crop. Prints the agreement for each serve-time crop (``face-box``: FER2013's framing about
each face detector's find, YuNet's landmarks or Haar's box, side by side; ``eyes-mouth``: the data
pipeline's ROI) and how many pasted faces were not found; for an export with TTA, also with the mirror
alone as its TTA (how exports served before TTA zoomed: ``search.trial.tta``), so all figures come from
one run.

    python -m benchmarks.crop_agreement --export runs/<dir>/export --ckplus ../shared/data/ckplus.tar
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from search.serving import ExportManifest, Predictor, predict_paths

CROPS = ("face-box", "eyes-mouth")


def ck_faces(tar_path: Path, n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` CK+48 images (every class, a fixed random draw): (name, 48×48 uint8)."""
    with tarfile.open(tar_path) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".png"))
        pick = np.random.default_rng(seed).permutation(len(names))[:n]
        out = []
        for i in sorted(pick):
            data = tar.extractfile(names[i]).read()
            out.append((names[i], cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)))
    return out


def photo(
    face: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (400, 300), where: bool = False
):
    """A grey, mildly noisy photo with the face upscaled to 120–180 px somewhere inside it (``where``: and
    the pasted square, (x, y, side))."""
    w, h = size
    img = np.clip(rng.normal(120, 12, (h, w)), 0, 255).astype(np.uint8)
    side = int(rng.integers(120, 181))
    x, y = int(rng.integers(10, w - side - 10)), int(rng.integers(10, h - side - 10))
    img[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return (img, (x, y, side)) if where else img


def mirror_only(export: Path, out: Path) -> Path:
    """A copy of ``export`` whose TTA is the mirror alone (served by torch: its ONNX graph has the zooms)."""
    shutil.copytree(export, out)
    manifest = ExportManifest.read(out)
    dataclasses.replace(manifest, tta_zooms=None).write(out)
    return out


def agreement(
    export: Path,
    faces: list[tuple[str, np.ndarray]],
    seed: int = 0,
    backend: str = "auto",
    crops: tuple[str, ...] = CROPS,
    detectors: tuple[str, ...] = ("haar",),
) -> dict[str, dict]:
    predictor = Predictor.from_dir(export, backend=backend)
    direct = predictor.predict_proba(np.stack([f for _, f in faces])).argmax(1)
    rng = np.random.default_rng(seed)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, (_, face) in enumerate(faces):
            p = Path(d) / f"photo_{i:04d}.png"
            cv2.imwrite(str(p), photo(face, rng))
            paths.append(p)
        runs = [(c, d) for c in crops for d in (detectors if c == "face-box" else ("haar",))]
        for crop, detector in runs:
            labels: dict[str, list[str]] = {}
            t = time.perf_counter()
            for r in predict_paths(predictor, paths, crop=crop, detector=detector):
                labels.setdefault(Path(r.input).name, []).append(r.label if r.status == "ok" else None)
            same = found = 0
            for i, p in enumerate(paths):
                got = [x for x in labels.get(p.name, []) if x is not None]
                found += bool(got)
                same += bool(got) and got[0] == predictor.classes[direct[i]]
            out[f"{crop} ({detector})"] = {
                "agree": same / len(faces), "found": found / len(faces), "n": len(faces),
                "ms_per_photo": 1000 * (time.perf_counter() - t) / len(faces),
            }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, type=Path)
    ap.add_argument("--ckplus", required=True, type=Path)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument(
        "--seed", type=int, default=0, help="which CK+ faces and photos (0: the benchmark's draw)"
    )
    ap.add_argument(
        "--detectors", default="yunet+haar,yunet,haar", help="face detectors of the face-box crop, compared"
    )
    args = ap.parse_args()
    faces = ck_faces(args.ckplus, args.n, args.seed)
    manifest = ExportManifest.read(args.export)
    detectors = tuple(args.detectors.split(","))
    runs = {"as exported": agreement(args.export, faces, args.seed, "torch", detectors=detectors)}
    if manifest.tta_flip and manifest.tta_zooms:
        runs[f"TTA zooms {list(manifest.zooms)}"] = runs.pop("as exported")
        with tempfile.TemporaryDirectory() as d:
            runs["TTA mirror only"] = agreement(
                mirror_only(args.export, Path(d) / "export"), faces, args.seed, "torch", detectors=detectors
            )
    for views, result in runs.items():
        for crop, r in result.items():
            print(
                f"{views:<28} {crop:<20} same class as the 48×48 crop: {r['agree']:.1%}  (face found in "
                f"{r['found']:.1%} of {r['n']} photos, {r['ms_per_photo']:.1f} ms a photo)"
            )


if __name__ == "__main__":
    main()
