"""The on-disk contract every trial reads: ``<split>.parquet`` + ``manifest.json`` + ``quarantine.csv``.

Readers and variants hand the driver one Arrow table (all splits, a ``split`` column) plus the rows they
could not or would not keep; this module writes it the one deterministic way (one file per split, rows in
a canonical order, no timestamps) so the same inputs and seed give byte-identical Parquet.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIPELINE_VERSION = "0.2.0"
CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
CLASSES8: tuple[str, ...] = (*CLASSES, "Contempt")
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
SIDE = 48
QUARANTINE_HEADER = ("row", "kind", "reason", "origin")
COLUMN_ORDER = ("row", "split", "label", "image", "soft", "aug", "subject", "path")
# Quarantine kinds that count against ``max_bad_fraction``; the others are deliberate, reported drops.
BAD_KINDS = frozenset({"bad"})


class DataError(ValueError):
    """Input that cannot be ingested; the message names the file (and row where known)."""


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared dataset lives and what it holds."""

    root: Path
    manifest: dict

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.parquet"

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("classes", CLASSES))


@dataclass(frozen=True)
class Quarantined:
    """A source row that is not in the output, and why (``kind``: bad, no_face, label, filtered, ...)."""

    row: int
    kind: str
    reason: str
    origin: str = ""


@dataclass
class Rows:
    """Decoded rows in the driver: ``table`` has row, split (int8), label (int8), image and optional
    soft / aug / subject / path columns; ``quarantine`` lists every source row that is not in ``table``."""

    table: pa.Table
    quarantine: list[Quarantined]
    rows_in: int
    classes: tuple[str, ...]
    height: int = SIDE
    width: int = SIDE
    info: dict = field(default_factory=dict)


def file_key(path: str | Path) -> tuple[str, int, int]:
    """A file's identity for per-process caches: resolved path, size and mtime (a rewrite changes it)."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def sha256_file(path: Path) -> str:
    """sha256 of a file, computed once per process per version of the file (a data variant, a resumed
    search and the export manifest all ask for the same CSV's)."""
    return _sha256_of(file_key(path))


@functools.lru_cache(maxsize=64)
def _sha256_of(key: tuple[str, int, int]) -> str:
    h = hashlib.sha256()
    with open(key[0], "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def image_array(images: np.ndarray) -> pa.FixedSizeBinaryArray:
    """uint8 ``(n, h, w)`` or ``(n, h*w)`` → one fixed-size binary array without a per-row copy."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    width = flat.shape[1]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(flat), [None, pa.py_buffer(flat)])


def images_of(column: pa.ChunkedArray | pa.Array, height: int, width: int) -> np.ndarray:
    """Fixed-size binary column → uint8 ``(n, height, width)`` (a copy, writeable)."""
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(flat)
    if n == 0:
        return np.zeros((0, height, width), dtype=np.uint8)
    size = height * width
    buf = np.frombuffer(flat.buffers()[1], dtype=np.uint8, count=n * size, offset=flat.offset * size)
    return buf.reshape(n, height, width).copy()


def counts_by_split(table: pa.Table, classes: tuple[str, ...]) -> dict[str, dict[str, int]]:
    split = table["split"].to_numpy()
    label = table["label"].to_numpy().astype(np.int64)
    out = {}
    for i, name in enumerate(SPLITS):
        hist = np.bincount(label[split == i], minlength=len(classes))
        out[name] = {c: int(hist[k]) for k, c in enumerate(classes)}
    return out


def class_weights(counts: dict[str, int]) -> dict[str, float]:
    """Weights for weighted cross-entropy (paper 002): ``n / (k * n_c)``, 0 for an empty class."""
    total = sum(counts.values())
    present = sum(1 for v in counts.values() if v > 0)
    return {c: round(total / (present * v), 6) if v else 0.0 for c, v in counts.items()}


def canonical(table: pa.Table) -> pa.Table:
    """Columns in one order, rows by (split, row, aug): rows built in memory and rows read back from
    disk are then the same table, so a derived variant does not depend on whether its base was cached."""
    keys = [k for k in ("split", "row", "aug") if k in table.column_names]
    cols = [c for c in COLUMN_ORDER if c in table.column_names]
    return table.select(cols).sort_by([(k, "ascending") for k in keys])


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def write_dataset(root: Path, rows: Rows, manifest: dict) -> PreparedData:
    """Write one prepared dataset; ``manifest.json`` goes last so a half-written dir is never reused.
    ``rows.table`` is put in :func:`canonical` order in place (as :func:`read_rows` returns it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    table = rows.table = canonical(rows.table)
    has_aug = "aug" in table.column_names
    written = len(table) - (int(pc.sum(pc.greater(table["aug"], 0)).as_py() or 0) if has_aug else 0)
    split = table["split"].to_numpy()
    meta = {"image": f"uint8 {rows.height}x{rows.width} row-major grayscale", "row": "source row"}
    parts = [
        table.filter(pa.array(split == i)).drop(["split"]).replace_schema_metadata(meta) for i in range(3)
    ]
    with ThreadPoolExecutor(len(SPLITS)) as pool:
        list(pool.map(_write_parquet, parts, [root / f"{s}.parquet" for s in SPLITS]))
    quarantine = sorted(rows.quarantine, key=lambda q: (q.row, q.kind))
    with open(root / "quarantine.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(QUARANTINE_HEADER)
        w.writerows((q.row, q.kind, q.reason, q.origin) for q in quarantine)
    kinds: dict[str, int] = {}
    for q in quarantine:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
    counts = counts_by_split(table, rows.classes)
    manifest = {
        **manifest,
        "pipeline_version": PIPELINE_VERSION,
        "classes": list(rows.classes),
        "image": {"height": rows.height, "width": rows.width, "channels": 1, "dtype": "uint8"},
        "columns": [c for c in table.column_names if c != "split"],
        "rows_in": rows.rows_in,
        "rows_written": written,
        "rows_quarantined": len(quarantine),
        "rows_augmented": len(table) - written,
        "rows_total": len(table),
        "quarantine_kinds": dict(sorted(kinds.items())),
        "counts": counts,
        "class_weights": class_weights(counts["Training"]),
        "files": {s: f"{s}.parquet" for s in SPLITS},
        **({"info": rows.info} if rows.info else {}),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return PreparedData(root, manifest)


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def cached(root: Path, spec_sha: str) -> PreparedData | None:
    """The dataset at ``root`` if it was built from the same spec and is complete."""
    m = read_manifest(root)
    if m and m.get("spec_sha256") == spec_sha and m.get("pipeline_version") == PIPELINE_VERSION:
        if all((root / f"{s}.parquet").is_file() for s in SPLITS) and (root / "quarantine.csv").is_file():
            return PreparedData(root, m)
    return None


def read_rows(prepared: PreparedData) -> Rows:
    """A prepared dataset back into driver rows (the input of a derived variant)."""
    m = prepared.manifest
    parts = []
    for i, name in enumerate(SPLITS):
        t = pq.read_table(prepared.split_path(name)).replace_schema_metadata(None)
        parts.append(t.append_column("split", pa.array(np.full(len(t), i, dtype=np.int8))))
    with open(prepared.root / "quarantine.csv", newline="") as f:
        quarantine = [
            Quarantined(int(r["row"]), r["kind"], r["reason"], r["origin"]) for r in csv.DictReader(f)
        ]
    return Rows(
        table=canonical(pa.concat_tables(parts)),
        quarantine=quarantine,
        rows_in=int(m["rows_in"]),
        classes=tuple(m["classes"]),
        height=int(m["image"]["height"]),
        width=int(m["image"]["width"]),
    )


def load_split(
    root: str | Path, split: str, *, with_labels: bool = True, with_soft: bool = False
) -> tuple[np.ndarray, ...]:
    """Images ``uint8 (N, H, W)`` and labels ``int64 (N,)`` of one split of a prepared directory.

    ``with_labels=False`` never reads the label column (labels come back as ``None``): the search gets
    PrivateTest images this way, so nothing in it can score against PrivateTest labels. ``with_soft=True``
    adds a third item, the FER+ soft labels ``float32 (N, C)`` (``None`` when the dataset has none).
    """
    root = Path(root)
    path = root / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: missing; run `fersearch data prepare` first")
    images, labels, soft = _read_split(file_key(path), with_labels, with_soft)
    copies = tuple(None if a is None else a.copy() for a in (images, labels, soft))  # the cache stays intact
    return copies if with_soft else copies[:2]


@functools.lru_cache(maxsize=8)
def _read_split(
    key: tuple[str, int, int], with_labels: bool, with_soft: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One split decoded once per process (search, selection, merge net and report all read it)."""
    path = Path(key[0])
    schema = pq.read_schema(path)
    cols = ["image"] + (["label"] if with_labels else [])
    has_soft = "soft" in schema.names
    if with_soft and has_soft:
        cols.append("soft")
    table = pq.read_table(path, columns=cols)
    m = read_manifest(path.parent)
    if m and "image" in m:
        h, w = int(m["image"]["height"]), int(m["image"]["width"])
    else:
        side = int(round(schema.field("image").type.byte_width ** 0.5))
        h = w = side
    images = images_of(table["image"], h, w)
    labels = table["label"].to_numpy().astype(np.int64) if with_labels else None
    soft = None
    if with_soft and has_soft:
        flat = table["soft"].combine_chunks()
        k = flat.type.list_size
        soft = flat.flatten().to_numpy().astype(np.float32).reshape(len(flat), k)
    return images, labels, soft
