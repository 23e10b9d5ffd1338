"""Export a selected ensemble to a directory and load it back without unpickling anything.

Layout: ``manifest.json`` (classes, input spec, members with arch/kwargs/weight, metrics, sha256 of every
file) and one ``member_<i>.safetensors`` per member.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from models import create_model
from search.trainable import NORM_MEAN, NORM_STD, WEIGHTS_FILE, predict_proba

FORMAT = "fersearch-ensemble/1"
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}


class ExportError(ValueError):
    """An export directory that cannot be loaded safely; the message names the file."""


@dataclass(frozen=True)
class Member:
    """One ensemble member as exported: where its weights came from and how to rebuild it."""

    trial_id: str
    arch: str
    arch_kwargs: dict
    weight: float
    checkpoint: Path
    val_acc: float


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_ensemble(
    members: Sequence[Member],
    out_dir: str | Path,
    *,
    classes: Sequence[str],
    metrics: dict,
    data_manifest: dict | None = None,
) -> Path:
    """Write the ensemble to ``out_dir`` (replaced if it exists) and return the directory."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries = []
    for i, m in enumerate(members):
        name = f"member_{i}.safetensors"
        shutil.copyfile(m.checkpoint / WEIGHTS_FILE, out / name)
        entries.append(
            {
                "file": name,
                "trial_id": m.trial_id,
                "arch": m.arch,
                "arch_kwargs": m.arch_kwargs,
                "weight": m.weight,
                "val_acc": m.val_acc,
            }
        )
    manifest = {
        "format": FORMAT,
        "classes": list(classes),
        "input": {
            "height": 48,
            "width": 48,
            "channels": 1,
            "color": "grayscale",
            "dtype": "uint8",
            "normalize": {"scale": 1 / 255, "mean": NORM_MEAN, "std": NORM_STD},
            "layout": "NCHW",
        },
        "output": "weighted mean of member softmax probabilities",
        "members": entries,
        "metrics": metrics,
        "data_manifest_sha256": (
            hashlib.sha256(json.dumps(data_manifest, sort_keys=True).encode()).hexdigest()
            if data_manifest
            else None
        ),
        "files": {e["file"]: _sha256(out / e["file"]) for e in entries},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


class Predictor:
    """Loads an export directory (safetensors only) and returns ensemble probabilities."""

    def __init__(self, manifest: dict, models: list[torch.nn.Module], weights: np.ndarray) -> None:
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.models = models
        self.weights = weights

    @classmethod
    def from_dir(cls, path: str | Path) -> Predictor:
        root = Path(path)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            pickles = sorted(p.name for p in root.glob("*") if p.suffix in PICKLE_SUFFIXES)
            hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
            raise ExportError(f"{manifest_path}: missing; not a fersearch export{hint}")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ExportError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        models, weights = [], []
        for entry in manifest["members"]:
            file = root / entry["file"]
            if file.suffix != ".safetensors":
                raise ExportError(
                    f"{file}: refusing to load {file.suffix} weights; only .safetensors is loaded"
                )
            expected = manifest.get("files", {}).get(entry["file"])
            if expected and _sha256(file) != expected:
                raise ExportError(f"{file}: sha256 does not match manifest.json")
            try:
                state = load_file(str(file))
            except (SafetensorError, OSError) as e:
                raise ExportError(f"{file}: not a valid safetensors file ({e})") from e
            model = create_model(entry["arch"], num_classes=len(manifest["classes"]), **entry["arch_kwargs"])
            model.load_state_dict(state, strict=True)
            models.append(model.to(memory_format=torch.channels_last).eval())
            weights.append(float(entry["weight"]))
        w = np.asarray(weights, dtype=np.float64)
        return cls(manifest, models, w / w.sum())

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 48, 48) → probabilities (N, classes)."""
        if images.ndim != 3 or images.shape[1:] != (48, 48):
            raise ValueError(f"expected uint8 images of shape (N, 48, 48), got {images.shape}")
        return sum(w * predict_proba(m, images) for w, m in zip(self.weights, self.models, strict=True))
