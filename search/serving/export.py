"""Export a selected ensemble to a directory and load it back without unpickling anything.

Layout: ``model.onnx`` (the whole weighted ensemble as one graph: float pixels 0..255, shape (N, 1, 48, 48)
in, softmax probabilities out), one ``member_<i>.safetensors`` per member, and ``manifest.json`` (classes,
input spec and preprocessing, members with arch/kwargs/weight, metrics, package versions, sha256 of every
file). ``Predictor`` runs the ONNX graph on ONNX Runtime when it is installed, else rebuilds the members
in torch from the safetensors; the two agree to 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from data_pipeline import DataManifest
from models import create_model
from search.ensemble import Candidate, WeightedEnsemble
from search.trial import FLIP_ONLY, NORM_MEAN, NORM_STD, TTA_ZOOMS, WEIGHTS_FILE, predict_proba, tta_proba

FORMAT = "fersearch-ensemble/1"
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}
VERSIONED = (
    "fersearch",
    "torch",
    "onnx",
    "onnxruntime",
    "safetensors",
    "ray",
    "optuna",
    "opencv-python-headless",
)


class ExportError(ValueError):
    """An export directory that cannot be loaded safely; the message names the file."""


INPUT = {
    "height": 48,
    "width": 48,
    "channels": 1,
    "color": "grayscale",
    "dtype": "uint8",
    "normalize": {"scale": 1 / 255, "mean": NORM_MEAN, "std": NORM_STD},
    "layout": "NCHW",
    "onnx_input": "float32 pixels 0..255, shape (N, 1, 48, 48); normalisation is inside the graph",
}
# Recorded when the export is not told how its training images were made: predict then uses ``auto``.
NO_PREPROCESSING = {"grayscale": True, "resize": [48, 48], "interpolation": "area", "face_roi": None}


@dataclass(frozen=True, kw_only=True)
class ExportMember:
    """One member of an exported ensemble: its safetensors file (a name inside the export directory), how
    to rebuild the model, its weight in the ensemble, and the trial and PublicTest accuracy it came from."""

    file: str
    trial_id: str | None = None
    arch: str
    arch_kwargs: dict
    weight: float
    val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The member as the manifest's ``members`` (and the W&B artifact's metadata) hold it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class ExportManifest:
    """``manifest.json`` of an export directory, and the only reader and writer of it.

    Fields are the JSON keys in the order they are written. :meth:`read` checks what loading needs (one
    ``ExportError`` naming the file and the key); :func:`verify_export` also checks the files it lists.
    """

    format: str = FORMAT
    classes: tuple[str, ...]
    input: dict = field(default_factory=lambda: dict(INPUT))
    preprocessing: dict = field(default_factory=lambda: dict(NO_PREPROCESSING))
    tta_flip: bool = False
    #: TTA's zooms (each also mirrored); None in exports written before them, which mirror only.
    tta_zooms: tuple[float, ...] | None = None
    output: str = "weighted mean of member softmax probabilities"
    members: tuple[ExportMember, ...]
    metrics: dict = field(default_factory=dict)
    data_manifest_sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    #: a student of ``fersearch distill``: True, and ``teacher`` the sha256 of its teacher's manifest.json
    distilled: bool = False
    teacher: str | None = None
    files: dict[str, str]

    @classmethod
    def read(cls, root: str | Path) -> ExportManifest:
        """The manifest of the export at ``root``, checked for the keys and types loading needs. Files are
        not opened: see :func:`verify_export`."""
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            pickles = sorted(p.name for p in root.glob("*") if p.suffix in PICKLE_SUFFIXES)
            hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
            raise ExportError(f"{path}: missing; not a fersearch export{hint}")
        try:
            raw = json.loads(path.read_text())
        except OSError as e:
            raise ExportError(f"{path}: cannot read it ({e.strerror or e})") from e
        except UnicodeDecodeError as e:
            raise _manifest_error(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
        except json.JSONDecodeError as e:
            where = f"{e.msg}, line {e.lineno} column {e.colno}"
            raise _manifest_error(path, f"not valid JSON ({where})") from e
        if not isinstance(raw, dict):
            raise _manifest_error(path, f"holds a {type(raw).__name__}, not a JSON object")
        _check(raw, path)
        values = {f.name: raw[f.name] for f in fields(cls) if raw.get(f.name) is not None}
        if "tta_zooms" in values:
            zooms = values["tta_zooms"]
            numbers = all(isinstance(z, int | float) and not isinstance(z, bool) and z > 0 for z in zooms)
            if not zooms or not numbers:
                raise _manifest_error(path, "key 'tta_zooms' must list positive zoom factors")
            values["tta_zooms"] = tuple(float(z) for z in zooms)
        members = tuple(ExportMember(**{k: e.get(k) for k in _MEMBER_TYPES}) for e in raw["members"])
        return cls(**{**values, "classes": tuple(raw["classes"]), "members": members})

    def best_member(self) -> ExportMember:
        """The member that scored best alone (PublicTest accuracy, then weight): a student's default
        architecture, and the single model an ensemble is compared with."""
        return max(self.members, key=lambda m: (m.val_acc or 0.0, m.weight))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.tta_zooms is None:
            del out["tta_zooms"]
        else:
            out["tta_zooms"] = list(self.tta_zooms)
        if not self.distilled:  # an ensemble's manifest reads as it did before students existed
            del out["distilled"], out["teacher"]
        return {**out, "classes": list(self.classes), "members": [m.to_dict() for m in self.members]}

    @property
    def zooms(self) -> tuple[float, ...]:
        """The zooms the graph's TTA averages over (when ``tta_flip``); an export written before zooms were
        recorded mirrors only. :meth:`read` has checked ``tta_zooms`` already."""
        return self.tta_zooms or FLIP_ONLY

    def write(self, root: str | Path) -> Path:
        """Write ``manifest.json``; :func:`export_ensemble` does it last, once the files it hashes exist."""
        path = Path(root) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# JSON types of a member's keys (a key that may be null may be absent) and of the manifest's optional keys
_MEMBER_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "trial_id": (str, type(None)),
    "arch": (str,),
    "arch_kwargs": (dict,),
    "weight": (int, float),
    "val_acc": (int, float, type(None)),
}
_OPTIONAL_TYPES: dict[str, type] = {
    "input": dict,
    "preprocessing": dict,
    "tta_flip": bool,
    "tta_zooms": list,
    "output": str,
    "metrics": dict,
    "data_manifest_sha256": str,
    "versions": dict,
    "distilled": bool,
    "teacher": str,
}


class EnsembleNet(torch.nn.Module):
    """Weighted mean of member softmax outputs, with the input normalisation (and TTA, if chosen: the
    ``zooms`` of :mod:`search.trial.tta`, each also mirrored) inside the graph."""

    def __init__(
        self,
        members: Sequence[torch.nn.Module],
        weights: Sequence[float],
        tta: bool = False,
        zooms: Sequence[float] = TTA_ZOOMS,
    ) -> None:
        super().__init__()
        self.tta = tta
        self.zooms = tuple(zooms)
        self.members = torch.nn.ModuleList(members)
        w = torch.tensor(list(weights), dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - NORM_MEAN) / NORM_STD
        out = self.weights[0] * self._member(0, x)
        for i in range(1, len(self.members)):
            out = out + self.weights[i] * self._member(i, x)
        return out

    def _member(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.tta:
            return tta_proba(self.members[i], x, self.zooms)
        return torch.softmax(self.members[i](x), dim=1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def load_member(file: Path, arch: str, arch_kwargs: dict, num_classes: int) -> torch.nn.Module:
    """One exported member file as a model, or an ExportError naming the file and what does not fit."""
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ExportError(f"{file}: not a valid safetensors file ({e})") from e
    try:
        model = create_model(arch, num_classes=num_classes, **arch_kwargs)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"{file}: does not fit {arch}({arch_kwargs}) as the manifest says ({why})") from e
    return model.to(memory_format=torch.channels_last).eval()


def _check_weights_file(file: Path) -> None:
    """Refuse anything but a well-formed safetensors file, before any loader sees it."""
    if file.suffix != ".safetensors":
        raise ExportError(f"{file}: refusing to load {file.suffix} weights; only .safetensors is loaded")
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as e:
        raise ExportError(f"{file}: not a valid safetensors file ({e})") from e


def export_onnx(net: torch.nn.Module, path: Path, side: int = 48) -> Path:
    net.eval()
    dummy = torch.full((2, 1, side, side), 128.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed 48x48 spatial size is intended
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=["pixels"],
            output_names=["probabilities"],
            dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def export_ensemble(
    candidates: Sequence[Candidate],
    ensemble: WeightedEnsemble,
    out_dir: str | Path,
    *,
    classes: Sequence[str],
    metrics: dict,
    data_manifest: DataManifest | None = None,
    preprocessing: dict | None = None,
    onnx: bool = True,
    teacher: str | None = None,
) -> Path:
    """Write ``ensemble``'s members (of ``candidates``) to ``out_dir`` (replaced if it exists), with flip
    TTA inside the graph when the ensemble was chosen with it; returns the directory. ``teacher``: the
    export a distilled student learned from (its manifest's sha256)."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    members, modules, tta = [], [], ensemble.tta
    for i, (index, weight) in enumerate(ensemble.weights.items()):
        m, name = candidates[index], f"member_{i}.safetensors"
        shutil.copyfile(m.checkpoint / WEIGHTS_FILE, out / name)
        members.append(
            ExportMember(
                file=name,
                trial_id=m.name,
                arch=m.arch,
                arch_kwargs=m.arch_kwargs,
                weight=weight,
                val_acc=m.val_acc,
            )
        )
        modules.append(load_member(out / name, m.arch, m.arch_kwargs, len(classes)))
    if onnx:
        export_onnx(EnsembleNet(modules, list(ensemble.weights.values()), tta), out / ONNX_FILE)
    files = [m.file for m in members] + ([ONNX_FILE] if onnx else [])
    ExportManifest(
        classes=tuple(classes),
        preprocessing=preprocessing or dict(NO_PREPROCESSING),
        tta_flip=tta,
        tta_zooms=TTA_ZOOMS if tta else None,
        members=tuple(members),
        metrics=metrics,
        data_manifest_sha256=data_manifest.sha256() if data_manifest else None,
        versions=_versions(),
        distilled=teacher is not None,
        teacher=teacher,
        files={f: _sha256(out / f) for f in files},
    ).write(out)
    return out


def _inside(root: Path, name: object, manifest_path: Path, key: str) -> Path:
    """``root / name``, refused unless it is a relative path that stays inside ``root`` (symlinks too)."""
    if not isinstance(name, str) or not name:
        raise ExportError(f"{manifest_path}: {key} must be a file name, got {name!r}")
    path = root / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise ExportError(f"{manifest_path}: {key} {name!r} points outside the export directory {root}")
    return path


def _manifest_error(manifest_path: Path, what: str) -> ExportError:
    return ExportError(f"{manifest_path}: {what}; the export is damaged or incomplete")


def _check(raw: dict, path: Path) -> None:
    """Every key loading needs is there with its type, or one ExportError naming the file and the key."""
    if raw.get("format") != FORMAT:
        raise ExportError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r}")
    expected = {"classes": list, "members": list, "files": dict}
    for key, kind in expected.items():
        if key not in raw:
            raise _manifest_error(path, f"missing key {key!r}")
        if not isinstance(raw[key], kind) or not raw[key]:
            raise _manifest_error(path, f"key {key!r} must be a non-empty {kind.__name__}")
    if not all(isinstance(c, str) for c in raw["classes"]):
        raise _manifest_error(path, "key 'classes' must list class names")
    for i, m in enumerate(raw["members"]):
        if not isinstance(m, dict):
            raise _manifest_error(path, f"members[{i}] is not an object")
        for key, kinds in _MEMBER_TYPES.items():
            if key not in m and type(None) not in kinds:
                raise _manifest_error(path, f"members[{i}] has no key {key!r}")
            if not isinstance(m.get(key), kinds) or isinstance(m.get(key), bool):
                raise _manifest_error(path, f"members[{i}].{key} has the wrong type")
    for name, digest in raw["files"].items():
        if not isinstance(digest, str):
            raise _manifest_error(path, f"files[{name!r}] must be a sha256 hex string")
    for key, kind in _OPTIONAL_TYPES.items():
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise _manifest_error(path, f"key {key!r} has the wrong type")


def verify_export(root: str | Path) -> ExportManifest:
    """The manifest of an export that is whole: every member inside the directory, a safetensors file
    (pickles refused) listed in ``files``; every file ``files`` lists present with its sha256. Damage
    (a deleted ``model.onnx``, a truncated manifest, a member outside the directory) fails here, naming
    the file, before any loader opens anything."""
    root = Path(root)
    manifest = ExportManifest.read(root)
    manifest_path = root / MANIFEST_FILE
    files = manifest.files
    for i, entry in enumerate(manifest.members):
        file = _inside(root, entry.file, manifest_path, f"members[{i}].file")
        if not file.is_file():
            raise ExportError(f"{file}: missing (members[{i}] of {manifest_path})")
        _check_weights_file(file)
        if entry.file not in files:
            raise ExportError(f"{file}: not listed in {manifest_path} files, so its sha256 cannot be checked")
    for name, expected in files.items():
        path = _inside(root, name, manifest_path, "files key")
        if not path.is_file():
            raise ExportError(f"{path}: missing (listed in {manifest_path} files)")
        if _sha256(path) != expected:
            raise ExportError(f"{path}: sha256 does not match manifest.json")
    return manifest


class Predictor:
    """Loads an export directory (safetensors / ONNX only) and returns ensemble probabilities."""

    def __init__(
        self, manifest: ExportManifest, root: Path, backend: str, threads: int | None = None
    ) -> None:
        self.manifest = manifest
        self.root = root
        self.classes: list[str] = list(manifest.classes)
        self.backend = backend
        self.threads = threads
        self._session = None
        self._net: EnsembleNet | None = None

    @classmethod
    def from_dir(cls, path: str | Path, backend: str = "auto", threads: int | None = None) -> Predictor:
        """``backend``: ``onnx`` (ONNX Runtime), ``torch``, or ``auto`` (ONNX Runtime when available).
        ``threads``: ONNX Runtime's intra-op threads (default: its own, every core), so replicas side by
        side do not oversubscribe the cores.

        The export is verified whole first (:func:`verify_export`), so a damaged one fails with one
        ``ExportError`` naming the file instead of a loader's traceback."""
        root = Path(path)
        manifest = verify_export(root)
        has_onnx = ONNX_FILE in manifest.files
        if backend == "auto":
            try:
                import onnxruntime  # noqa: F401

                backend = "onnx" if has_onnx else "torch"
            except ImportError:
                backend = "torch"
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be auto, onnx or torch, got {backend!r}")
        if backend == "onnx" and not has_onnx:
            raise ExportError(f"{root}: no {ONNX_FILE} in this export")
        predictor = cls(manifest, root, backend, threads)
        predictor._load()
        return predictor

    def _load(self) -> None:
        if self.backend == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.threads:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            path = self.root / ONNX_FILE
            try:
                self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # ORT raises its own (unexported) error classes
                raise ExportError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from e
            return
        models, weights = [], []
        for m in self.manifest.members:
            models.append(load_member(self.root / m.file, m.arch, m.arch_kwargs, len(self.classes)))
            weights.append(float(m.weight))
        self._net = EnsembleNet(models, weights, self.manifest.tta_flip, self.manifest.zooms).eval()

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, 48, 48) → probabilities (N, classes)."""
        if images.ndim != 3 or images.shape[1:] != (48, 48):
            raise ValueError(f"expected uint8 images of shape (N, 48, 48), got {images.shape}")
        out = []
        for i in range(0, len(images), batch_size):
            pixels = images[i : i + batch_size, None].astype(np.float32)
            if self._session is not None:
                out.append(self._session.run(None, {"pixels": pixels})[0])
            else:
                with torch.no_grad():
                    x = torch.from_numpy(pixels).contiguous(memory_format=torch.channels_last)
                    out.append(self._net(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


__all__ = [
    "EnsembleNet",
    "ExportError",
    "ExportManifest",
    "ExportMember",
    "Predictor",
    "export_ensemble",
    "export_onnx",
    "load_member",
    "predict_proba",
    "verify_export",
]
