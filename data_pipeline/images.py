"""Image-file benchmarks (a folder or a ``.tar`` of it) → decoded rows, on Ray Data.

* ``folder``: ``<split>/<class>/*`` (``train``/``val``/``test``, the common Kaggle image layout) or
  ``<class>/*``; splits it lacks are carved from the training images, stratified by class.
* ``ckplus``: ``<class>/S<subject>_<sequence>_<frame>.png`` (CK+48); ``contempt`` kept as an 8th class
  or mapped to Disgust (paper 001). Splits are subject-independent.
* ``jaffe``: ``<subject>.<code><n>.<id>.tiff`` with codes NE HA SA SU AN DI FE; subject-independent.

The driver lists and labels files (cheap, deterministic); Ray Data reads, decodes, crops and resizes them.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_pipeline import preprocess as pp
from data_pipeline.config import PreprocessConfig, SourceConfig
from data_pipeline.dataset import CLASSES, CLASSES8, SPLITS, DataError, Quarantined, Rows, image_array
from data_pipeline.engine import batches, default_blocks, ensure_ray, slices

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp", ".gif"})
ALIASES = {
    "angry": "Angry", "anger": "Angry", "an": "Angry",
    "disgust": "Disgust", "disgusted": "Disgust", "di": "Disgust",
    "fear": "Fear", "fearful": "Fear", "scared": "Fear", "fe": "Fear",
    "happy": "Happy", "happiness": "Happy", "ha": "Happy",
    "sad": "Sad", "sadness": "Sad", "sa": "Sad",
    "surprise": "Surprise", "surprised": "Surprise", "su": "Surprise",
    "neutral": "Neutral", "ne": "Neutral",
    "contempt": "Contempt",
}  # fmt: skip
SPLIT_DIRS = {
    "train": 0, "training": 0,
    "val": 1, "valid": 1, "validation": 1, "publictest": 1,
    "test": 2, "testing": 2, "privatetest": 2,
}  # fmt: skip
_CKPLUS_NAME = re.compile(r"^S(\d+)_(\d+)_(\d+)")
_JAFFE_NAME = re.compile(r"^([A-Za-z]{2,3})\.([A-Za-z]{2})\d*\.\d+\.tiff?$")


@dataclass
class Entry:
    """One image file: its path inside the source, label, split and subject (or why it is unusable)."""

    rel: str
    label: int = -1
    split: int = -1
    subject: str = ""
    error: str | None = None


def _head(root: Path, name: str, tar: tarfile.TarFile | None, members: dict) -> bytes:
    if tar is None:
        with open(root / name, "rb") as f:
            return f.read(16)
    f = tar.extractfile(members[name])
    return f.read(16) if f else b""


def list_files(root: Path) -> tuple[list[str], list[str]]:
    """Image files (relative, sorted) and the other files, which ``read_images`` quarantines as
    ``skipped``. An image is a file with an image extension, or one whose first bytes are an image's
    (an extension-less or renamed image); hidden files (``.DS_Store``) are never images."""
    tar, members = None, {}
    if root.is_dir():
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    elif tarfile.is_tarfile(root):
        tar = tarfile.open(root)
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        names = sorted(members)
    else:
        raise DataError(f"{root}: not a folder or a .tar of images")
    try:
        images = [
            n
            for n in names
            if not Path(n).name.startswith(".")
            and (
                Path(n).suffix.lower() in IMAGE_EXTS
                or pp.image_format(_head(root, n, tar, members)) is not None
            )
        ]
    finally:
        if tar is not None:
            tar.close()
    keep = set(images)
    return images, [n for n in names if n not in keep]


def _skip_reason(name: str) -> str:
    if Path(name).name.startswith("."):
        return "hidden file, not read"
    return f"not an image file ({Path(name).suffix or 'no extension'}, and its bytes are no image format)"


def _canonical(name: str, contempt: str) -> str | None:
    c = ALIASES.get(name.lower())
    return "Disgust" if c == "Contempt" and contempt == "disgust" else c


def subject_splits(subjects: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, int]:
    """Whole subjects to splits, so no subject is in two: subjects in a seeded order, each to the split
    furthest below its share of the images."""
    uniq, counts = np.unique(np.array(subjects), return_counts=True)
    target = np.array(fractions) * counts.sum()
    have = np.zeros(3)
    out: dict[str, int] = {}
    for k in np.random.default_rng(seed).permutation(len(uniq)):
        deficit = np.where(target > 0, (target - have) / np.maximum(target, 1e-9), -np.inf)
        s = int(np.argmax(deficit))
        out[str(uniq[k])] = s
        have[s] += counts[k]
    return out


def stratified_splits(labels: np.ndarray, shares: tuple[float, float, float], seed: int) -> np.ndarray:
    """Per class, a seeded permutation cut at the cumulative shares."""
    out = np.zeros(len(labels), dtype=np.int8)
    cum = np.cumsum(shares)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        cuts = np.round(cum[:2] * len(idx)).astype(int)
        out[idx[cuts[0] : cuts[1]]] = 1
        out[idx[cuts[1] :]] = 2
    return out


def _entries_ckplus(names: list[str], cfg: SourceConfig, seed: int) -> tuple[list[Entry], tuple[str, ...]]:
    classes = CLASSES8 if cfg.contempt == "keep" else CLASSES
    entries = []
    for rel in names:
        p = Path(rel)
        e = Entry(rel)
        cls = _canonical(p.parent.name, cfg.contempt) if p.parent.name else None
        m = _CKPLUS_NAME.match(p.name)
        if cls is None:
            e.error = f"class folder {p.parent.name!r} is not a CK+ emotion"
        elif m is None:
            e.error = "file name does not start with S<subject>_<sequence>_<frame>"
        else:
            e.label, e.subject = classes.index(cls), f"S{int(m.group(1)):03d}"
        entries.append(e)
    _assign_subjects(entries, cfg, seed)
    return entries, classes


def _entries_jaffe(names: list[str], cfg: SourceConfig, seed: int) -> tuple[list[Entry], tuple[str, ...]]:
    entries = []
    for rel in names:
        e = Entry(rel)
        m = _JAFFE_NAME.match(Path(rel).name)
        cls = _canonical(m.group(2), "keep") if m else None
        if m is None:
            e.error = "file name does not follow the JAFFE pattern <subject>.<code><n>.<id>.tiff"
        elif cls is None or cls == "Contempt":
            e.error = f"expression code {m.group(2)!r} is not one of NE HA SA SU AN DI FE"
        else:
            e.label, e.subject = CLASSES.index(cls), m.group(1).upper()
        entries.append(e)
    _assign_subjects(entries, cfg, seed)
    return entries, CLASSES


def _assign_subjects(entries: list[Entry], cfg: SourceConfig, seed: int) -> None:
    ok = [e for e in entries if e.error is None]
    if not ok:
        return
    where = subject_splits([e.subject for e in ok], cfg.split_fractions, seed)
    for e in ok:
        e.split = where[e.subject]


def _folder_order(name: str) -> tuple:
    """Index-named class folders in numeric order (``2`` before ``10``), named ones alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _folder_classes(raw: list[str], cfg: SourceConfig) -> tuple[tuple[str, ...], dict[str, int]]:
    """The classes of a folder source and each class folder's label: ``--class-names`` when given (an index
    folder takes the name at its index, a named one its place in the list, matched case-insensitively),
    else the canonical FER names when every folder is one, else the folder names in order."""
    if cfg.class_names is not None:
        names = cfg.class_names
        lower = [c.lower() for c in names]
        label_of = {c: int(c) for c in raw if c.isdigit() and int(c) < len(names)}
        label_of |= {c: lower.index(c.lower()) for c in raw if c.lower() in lower}
        return names, label_of
    canonical = {c: _canonical(c, cfg.contempt) for c in raw}
    if raw and all(canonical.values()):
        classes = CLASSES8 if "Contempt" in canonical.values() else CLASSES
        return classes, {c: classes.index(v) for c, v in canonical.items() if v}
    return tuple(raw), {c: i for i, c in enumerate(raw)}


def _entries_folder(names: list[str], cfg: SourceConfig, seed: int) -> tuple[list[Entry], tuple[str, ...]]:
    parts = [Path(n).parts for n in names]
    split_mode = any(len(p) >= 3 and p[0].lower() in SPLIT_DIRS for p in parts)
    raw_classes = sorted({p[-2] for p in parts if len(p) >= 2}, key=_folder_order)
    classes, label_of = _folder_classes(raw_classes, cfg)
    entries = []
    for rel, p in zip(names, parts, strict=True):
        e = Entry(rel)
        if len(p) < 2:
            e.error = "image is not inside a <class>/ folder"
        elif split_mode and (len(p) < 3 or p[0].lower() not in SPLIT_DIRS):
            e.error = f"image is not under a split folder ({', '.join(sorted(SPLIT_DIRS))})"
        elif p[-2] not in label_of:
            named = f"--class-names ({', '.join(classes)})"
            e.error = f"class folder {p[-2]!r} is not one of {named}"
            if p[-2].isdigit():
                e.error = f"class folder {p[-2]!r} is past the {len(classes)} {named}"
        else:
            e.label = label_of[p[-2]]
            e.split = SPLIT_DIRS[p[0].lower()] if split_mode else -1
        entries.append(e)
    ok = [e for e in entries if e.error is None]
    present = {e.split for e in ok}
    f = cfg.split_fractions
    if not split_mode:
        carve_from, shares = ok, f
    elif present >= {0, 1, 2} or 0 not in present:
        carve_from, shares = [], f
    else:
        carve_from = [e for e in ok if e.split == 0]
        keep = [f[0], f[1] if 1 not in present else 0.0, f[2] if 2 not in present else 0.0]
        shares = tuple(np.array(keep) / sum(keep))
    if carve_from:
        new = stratified_splits(np.array([e.label for e in carve_from]), shares, seed)
        for e, s in zip(carve_from, new, strict=True):
            e.split = int(s)
    return entries, classes


def decode_files_batch(batch: pa.Table, pre: PreprocessConfig) -> pa.Table:
    """Ray Data UDF: encoded files → ``pre.size``² grayscale, ROI flags, and errors (bad / no_face)."""
    import cv2

    cv2.setNumThreads(1)
    n = len(batch)
    out = np.zeros((n, pre.size, pre.size), dtype=np.uint8)
    errors: list[str | None] = [None] * n
    kinds: list[str | None] = [None] * n
    flags = np.zeros(n, dtype=np.int8)
    data = batch["bytes"]
    for i in range(n):
        gray, errors[i] = pp.decode_image(data[i].as_py())
        if gray is None:
            kinds[i] = "bad"
            continue
        img, flags[i], no_face = pp.preprocess(gray, pre)
        if img is None:
            errors[i], kinds[i] = no_face, "no_face"
        else:
            out[i] = img
    return pa.table(
        {
            "path": batch["path"],
            "image": image_array(out),
            "error": pa.array(errors, pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "flags": pa.array(flags, pa.int8()),
        }
    )


def _dataset(root: Path, rels: list[str], parallelism: int | None):
    import ray.data

    if root.is_dir():
        paths = [str((root / r).resolve()) for r in rels]
        return ray.data.read_binary_files(paths, include_paths=True, override_num_blocks=parallelism), {
            p: i for i, p in enumerate(paths)
        }
    with tarfile.open(root) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        data = []
        for r in rels:
            f = tar.extractfile(members[r])
            data.append(f.read() if f else b"")
    table = pa.table({"path": rels, "bytes": pa.array(data, pa.binary())})
    weight = np.array([len(d) for d in data], dtype=np.float64) + 1
    blocks = slices(table, parallelism or default_blocks(), weight)
    return ray.data.from_arrow(blocks), {r: i for i, r in enumerate(rels)}


def read_images(cfg: SourceConfig, pre: PreprocessConfig, seed: int, parallelism: int | None = None) -> Rows:
    """Every image file of a ckplus / jaffe / folder source, decoded; unusable ones quarantined."""
    root = cfg.path
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    names, skipped = list_files(root)
    if not names:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))})")
    lister = {"ckplus": _entries_ckplus, "jaffe": _entries_jaffe, "folder": _entries_folder}[cfg.kind]
    entries, classes = lister(names, cfg, seed)
    quarantine = [Quarantined(i, "bad", e.error, e.rel) for i, e in enumerate(entries) if e.error]
    usable = [i for i, e in enumerate(entries) if e.error is None]
    n = len(usable)
    images = np.zeros((n, pre.size, pre.size), dtype=np.uint8)
    keep = np.zeros(n, dtype=bool)
    flags = np.zeros(n, dtype=np.int8)
    if usable:
        ensure_ray()
        ds, index = _dataset(root, [entries[i].rel for i in usable], parallelism)
        ds = ds.map_batches(decode_files_batch, batch_format="pyarrow", batch_size=64, fn_kwargs={"pre": pre})
        for batch in batches(ds):
            err, kind, flag = batch["error"].to_pylist(), batch["kind"].to_pylist(), batch["flags"].to_numpy()
            imgs = batch["image"].combine_chunks()
            for j, path in enumerate(batch["path"].to_pylist()):
                k = index[path]
                if err[j] is None:
                    keep[k], flags[k] = True, flag[j]
                    images[k] = np.frombuffer(imgs[j].as_py(), np.uint8).reshape(pre.size, pre.size)
                else:
                    quarantine.append(Quarantined(usable[k], kind[j], err[j], entries[usable[k]].rel))
    sel = np.array(usable, dtype=np.int64)[keep]
    cols = {
        "row": pa.array(sel, pa.int64()),
        "split": pa.array([entries[i].split for i in sel], pa.int8()),
        "label": pa.array([entries[i].label for i in sel], pa.int8()),
        "image": image_array(images[keep]),
        "path": pa.array([entries[i].rel for i in sel], pa.string()),
    }
    if cfg.kind in ("ckplus", "jaffe"):
        cols["subject"] = pa.array([entries[i].subject for i in sel], pa.string())
    info: dict = {"files": len(names) + len(skipped)}
    if skipped:
        info["skipped_non_image_files"] = {"count": len(skipped), "first": skipped[:5]}
        quarantine += [
            Quarantined(len(entries) + k, "skipped", _skip_reason(n), n) for k, n in enumerate(skipped)
        ]
    tried = flags != 0
    if tried.any() or any(q.kind == "no_face" for q in quarantine):
        info["roi"] = {
            "face": int(((flags & pp.FACE) > 0).sum()),
            "eyes_found": int(((flags & pp.EYES) > 0).sum()),
            "mouth_found": int(((flags & pp.MOUTH) > 0).sum()),
            "no_face": sum(1 for q in quarantine if q.kind == "no_face"),
        }
    if cfg.kind in ("ckplus", "jaffe"):
        by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
        for i in sel:
            by_split[SPLITS[entries[i].split]].append(entries[i].subject)
        info["subjects"] = {s: sorted(set(v)) for s, v in by_split.items()}
    rows_in = len(entries) + len(skipped)  # every file is a row: skipped ones are quarantined
    return Rows(pa.table(cols), quarantine, rows_in, classes, pre.size, pre.size, info)
