"""The on-disk contract every trial reads: ``<split>.parquet`` + ``manifest.json`` + ``quarantine.csv``.

Readers and variants hand the driver one Arrow table (all splits, a ``split`` column) plus the rows they
could not or would not keep; this module writes it the one deterministic way (one file per split, rows in
a canonical order, no timestamps) so the same inputs and seed give byte-identical Parquet.
:class:`DataManifest` is the only reader and writer of ``manifest.json``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIPELINE_VERSION = "0.2.0"
CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
CLASSES8: tuple[str, ...] = (*CLASSES, "Contempt")
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
SIDE = 48
MANIFEST_FILE = "manifest.json"
QUARANTINE_HEADER = ("row", "kind", "reason", "origin")
COLUMN_ORDER = ("row", "split", "label", "image", "soft", "aug", "subject", "path")
# Quarantine kinds that count against ``max_bad_fraction``; the others are deliberate, reported drops.
BAD_KINDS = frozenset({"bad"})


class DataError(ValueError):
    """Input that cannot be ingested; the message names the file (and row where known)."""


@dataclass(frozen=True, kw_only=True)
class ImageShape:
    """The pixels behind the ``image`` column, which holds raw bytes: 48x48 and 64x36 look alike there."""

    height: int
    width: int
    channels: int = 1
    dtype: str = "uint8"


@dataclass(frozen=True, kw_only=True)
class BaseVariant:
    """The dataset a derived variant was built from, as it was then (``describe`` plots its Training counts
    as the *before*); ``root`` is relative to the derived variant's directory."""

    variant: str
    root: str
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]


@dataclass(frozen=True, kw_only=True)
class DataManifest:
    """``manifest.json`` of a prepared dataset, and the only reader and writer of it.

    ``spec_sha256`` and ``pipeline_version`` decide whether a directory is reused (:func:`cached`); the
    classes, counts and image shape are what trials, selection, the report and the export read. Fields are
    the JSON keys, in the order they are written; ``None`` ones are left out. A key a hand-made or older
    manifest lacks takes the default (classes: FER2013's); ``counts`` is the one a reader needs.
    """

    source: str | None = None
    source_sha256: str | None = None
    format: str | None = None
    variant: str | None = None
    variant_params: dict | None = None
    seed: int | None = None
    source_options: dict | None = None
    preprocess: dict | None = None
    base: BaseVariant | None = None
    spec: dict | None = None
    spec_sha256: str | None = None
    pipeline_version: str | None = None
    classes: tuple[str, ...] = CLASSES
    image: ImageShape | None = None
    columns: tuple[str, ...] | None = None
    rows_in: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    rows_augmented: int = 0
    rows_total: int = 0
    quarantine_kinds: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    class_weights: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    info: dict | None = None

    @classmethod
    def read(cls, root: str | Path) -> DataManifest:
        """The manifest of the dataset at ``root``; a DataError naming the file (and the key) when it is
        missing, not a JSON object, or a key holds the wrong type."""
        path = Path(root) / MANIFEST_FILE
        if not path.is_file():
            raise DataError(f"{path}: missing; run `fersearch data prepare` first")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable JSON manifest ({e})") from e
        if not isinstance(raw, dict):
            raise DataError(f"{path}: holds a {type(raw).__name__}, not a JSON object")
        if "counts" not in raw:
            raise DataError(f"{path}: missing key 'counts'")
        values = {f.name: _json_value(raw, f.name, str(f.type), path) for f in fields(cls) if f.name in raw}
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def try_read(cls, root: str | Path) -> DataManifest | None:
        """The manifest at ``root``, or None where there is no whole one (absent, half written, damaged):
        a directory to build, never one to use."""
        try:
            return cls.read(root)
        except DataError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return {f.name: _plain(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def write(self, root: str | Path) -> Path:
        """Write ``manifest.json``; :func:`write_dataset` does it last, as its presence marks a whole
        directory."""
        path = Path(root) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def sha256(self) -> str:
        """The digest an export records as ``data_manifest_sha256`` (of the sorted-key JSON, so key order
        and indentation do not change it)."""
        return spec_hash(self.to_dict())


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: records as objects, tuples as lists."""
    if isinstance(value, ImageShape | BaseVariant):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return list(value) if isinstance(value, tuple) else value


_JSON_KINDS: dict[str, type] = {"str": str, "int": int, "tuple": list}  # any other field is an object


def _json_value(raw: dict, key: str, annotation: str, path: Path) -> Any:
    """``raw[key]`` as the field annotated ``annotation`` holds it, or a DataError naming the key."""
    value, head = raw[key], annotation.split("[")[0].split(" |")[0]
    if value is None:
        return None
    kind = _JSON_KINDS.get(head, dict)
    try:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(type(value).__name__)
        if kind is list:
            if not all(isinstance(v, str) for v in value):
                raise TypeError("not a list of names")
            return tuple(value)
        if head == "ImageShape":
            shape = ImageShape(**value)
            if type(shape.height) is not int or type(shape.width) is not int:
                raise TypeError("height and width must be integers")
            return shape
        if head == "BaseVariant":
            _check_counts(value["counts"])
            return BaseVariant(**{**value, "classes": tuple(value["classes"])})
        if key == "counts":
            _check_counts(value)
        return value
    except (AttributeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: key {key!r} has the wrong type or layout ({e})") from e


def _check_counts(counts: dict) -> None:
    """Counts are ``{split: {class: int}}``."""
    if not all(isinstance(c, dict) and all(type(n) is int for n in c.values()) for c in counts.values()):
        raise TypeError("counts must be {split: {class: images}}")


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared dataset lives and what it holds."""

    root: Path
    manifest: DataManifest

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.parquet"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes


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


def write_dataset(root: Path, rows: Rows, manifest: DataManifest) -> PreparedData:
    """Write one prepared dataset; ``manifest.json`` goes last so a half-written dir is never reused.
    ``manifest``: where the rows come from (source, variant, spec); what they hold (classes, shape, counts,
    class weights) is filled in here. ``rows.table`` is put in :func:`canonical` order in place (as
    :func:`read_rows` returns it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_FILE).unlink(missing_ok=True)
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
    manifest = replace(
        manifest,
        pipeline_version=PIPELINE_VERSION,
        classes=tuple(rows.classes),
        image=ImageShape(height=rows.height, width=rows.width),
        columns=tuple(c for c in table.column_names if c != "split"),
        rows_in=rows.rows_in,
        rows_written=written,
        rows_quarantined=len(quarantine),
        rows_augmented=len(table) - written,
        rows_total=len(table),
        quarantine_kinds=dict(sorted(kinds.items())),
        counts=counts,
        class_weights=class_weights(counts["Training"]),
        files={s: f"{s}.parquet" for s in SPLITS},
        info=rows.info or None,
    )
    manifest.write(root)
    return PreparedData(root, manifest)


def cached(root: Path, spec_sha: str) -> PreparedData | None:
    """The dataset at ``root`` if it was built from the same spec and is complete."""
    m = DataManifest.try_read(root)
    if m and m.spec_sha256 == spec_sha and m.pipeline_version == PIPELINE_VERSION:
        if all((root / f"{s}.parquet").is_file() for s in SPLITS) and (root / "quarantine.csv").is_file():
            return PreparedData(root, m)
    return None


def read_rows(prepared: PreparedData) -> Rows:
    """A prepared dataset back into driver rows (the input of a derived variant)."""
    m = prepared.manifest
    if m.image is None:
        raise DataError(f"{prepared.root / MANIFEST_FILE}: no image shape recorded; prepare it again")
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
        rows_in=m.rows_in,
        classes=m.classes,
        height=m.image.height,
        width=m.image.width,
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
    m = DataManifest.try_read(path.parent)
    if m and m.image:
        h, w = m.image.height, m.image.width
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
