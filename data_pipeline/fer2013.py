"""FER2013 Kaggle CSV (``emotion,pixels,Usage``) → Parquet per split, on Ray Data.

Ray Data parses and decodes in parallel; the driver then walks the decoded blocks in file order so every
row keeps its source row number, bad rows land in ``quarantine.csv`` with a reason, and the Parquet output
is deterministic (one file per split, rows in source order).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

PIPELINE_VERSION = "0.1.0"
CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
HEADER: tuple[str, ...] = ("emotion", "pixels", "Usage")
SIDE = 48
N_PIXELS = SIDE * SIDE

SCHEMA = pa.schema(
    [("row", pa.int64()), ("label", pa.int8()), ("image", pa.binary(N_PIXELS))],
    metadata={"image": "uint8 48x48 row-major grayscale", "row": "0-based data row of the source CSV"},
)


class DataError(ValueError):
    """Input that cannot be ingested; the message names the file (and row where known)."""


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared dataset lives and what it holds."""

    root: Path
    manifest: dict

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.parquet"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def check_header(path: Path) -> None:
    try:
        with _open_text(path) as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a (gzipped) CSV: {e}") from e
    if header is None:
        raise DataError(f"{path}: file is empty, expected header {','.join(HEADER)}")
    if tuple(h.strip() for h in header) != HEADER:
        raise DataError(f"{path}: row 0 (header) is {','.join(header)!r}, expected {','.join(HEADER)!r}")


def decode_batch(batch: pa.Table) -> pa.Table:
    """Validate and decode one batch of raw CSV rows.

    Fast path: one vectorised split + cast for the whole batch. A batch with a bad row falls back to
    row-by-row decoding so only that row is quarantined, with its reason.
    """
    labels_raw = batch.column("emotion").combine_chunks()
    usage = batch.column("Usage").combine_chunks()
    pixels = batch.column("pixels").combine_chunks()
    n = len(batch)
    images: list[bytes | None] = [None] * n
    errors: list[str | None] = [None] * n
    labels = np.full(n, -1, dtype=np.int8)

    try:
        parts = pc.split_pattern(pc.utf8_trim_whitespace(pixels), " ")
        lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        flat = pc.cast(pc.list_flatten(parts), pa.uint8()).to_numpy()
        ok_fast = bool(np.all(lengths == N_PIXELS)) and flat.size == n * N_PIXELS
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok_fast = False
    if ok_fast:
        buf = flat.reshape(n, N_PIXELS)
        images = [buf[i].tobytes() for i in range(n)]
    else:
        for i, s in enumerate(pixels.to_pylist()):
            images[i], errors[i] = _decode_row(s)

    for i, (lab, use) in enumerate(zip(labels_raw.to_pylist(), usage.to_pylist(), strict=True)):
        if errors[i]:
            continue
        try:
            value = int(str(lab).strip())
        except (TypeError, ValueError):
            errors[i] = f"emotion {lab!r} is not an integer"
            continue
        if not 0 <= value < len(CLASSES):
            errors[i] = f"emotion {value} out of range 0..{len(CLASSES) - 1}"
        elif use not in SPLITS:
            errors[i] = f"Usage {use!r} is not one of {', '.join(SPLITS)}"
        else:
            labels[i] = value
    for i in range(n):
        if errors[i]:
            images[i] = None
    return pa.table(
        {
            "label": pa.array(labels, pa.int8()),
            "usage": usage.cast(pa.string()),
            "image": pa.array(images, pa.binary(N_PIXELS)),
            "error": pa.array(errors, pa.string()),
            "raw_emotion": labels_raw.cast(pa.string()),
        }
    )


def _decode_row(s: str | None) -> tuple[bytes | None, str | None]:
    if s is None:
        return None, "pixels field is empty"
    tokens = s.split()
    if len(tokens) != N_PIXELS:
        return None, f"pixels has {len(tokens)} values, expected {N_PIXELS}"
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        return None, f"pixels has a non-integer value {bad!r}"
    if values.min() < 0 or values.max() > 255:
        return None, f"pixel value out of range 0..255 (min {values.min()}, max {values.max()})"
    return values.astype(np.uint8).tobytes(), None


def _read_decoded(path: Path, parallelism: int | None) -> Iterator[pa.Table]:
    import ray.data

    string = pa.string()
    ds = ray.data.read_csv(
        str(path),
        convert_options=pacsv.ConvertOptions(
            column_types={"emotion": string, "pixels": string, "Usage": string},
            include_columns=list(HEADER),
        ),
        arrow_open_stream_args={"compression": "gzip"} if path.suffix == ".gz" else None,
        override_num_blocks=parallelism,
    )
    ds = ds.map_batches(decode_batch, batch_format="pyarrow", batch_size=2048)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)


def prepare_fer2013(
    csv_path: str | Path,
    out_dir: str | Path,
    *,
    max_bad_fraction: float = 0.01,
    parallelism: int | None = None,
) -> PreparedData:
    """Ingest a Kaggle-layout FER2013 CSV (plain or ``.gz``) into ``out_dir``.

    Writes ``<split>.parquet`` (row, label, image), ``quarantine.csv`` (row, reason, emotion, Usage) and
    ``manifest.json``. A directory already prepared from the same source bytes is reused as it is.
    Fails if more than ``max_bad_fraction`` of the rows are bad.
    """
    src = Path(csv_path)
    out = Path(out_dir)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    digest = sha256_file(src)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("source_sha256") == digest and old.get("pipeline_version") == PIPELINE_VERSION:
            if all((out / f"{s}.parquet").is_file() for s in SPLITS):
                return PreparedData(out, old)
    check_header(src)
    out.mkdir(parents=True, exist_ok=True)

    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)

    per_split: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
    quarantined: list[tuple[int, str, str, str]] = []
    offset = 0
    try:
        for batch in _read_decoded(src, parallelism):
            n = len(batch)
            rows = np.arange(offset, offset + n, dtype=np.int64)
            offset += n
            err = batch.column("error")
            bad = pc.is_valid(err).to_numpy(zero_copy_only=False)
            if bad.any():
                for i in np.flatnonzero(bad):
                    quarantined.append(
                        (
                            int(rows[i]),
                            err[i].as_py(),
                            batch["raw_emotion"][i].as_py(),
                            batch["usage"][i].as_py(),
                        )
                    )
            good = batch.filter(pa.array(~bad))
            good_rows = rows[~bad]
            usage = good.column("usage").to_numpy(zero_copy_only=False)
            for split in SPLITS:
                mask = usage == split
                if mask.any():
                    sel = good.filter(pa.array(mask))
                    per_split[split].append(
                        pa.table(
                            {"row": good_rows[mask], "label": sel["label"], "image": sel["image"]},
                            schema=SCHEMA,
                        )
                    )
    except pa.ArrowInvalid as e:
        raise DataError(f"{src}: malformed CSV: {e}") from e
    except Exception as e:  # Ray wraps worker errors; surface the CSV reason with the file name
        if "CSV parse error" in str(e) or "ArrowInvalid" in str(e):
            raise DataError(f"{src}: malformed CSV: {_first_line(e)}") from e
        raise

    total = offset
    if total == 0:
        raise DataError(f"{src}: no data rows after the header")
    if len(quarantined) > max_bad_fraction * total:
        first = "; ".join(f"row {r}: {why}" for r, why, *_ in quarantined[:3])
        raise DataError(
            f"{src}: {len(quarantined)} of {total} rows are bad (> {max_bad_fraction:.1%} allowed); "
            f"first: {first}"
        )

    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        table = pa.concat_tables(per_split[split]) if per_split[split] else SCHEMA.empty_table()
        pq.write_table(table, out / f"{split}.parquet", compression="zstd")
        hist = np.bincount(table["label"].to_numpy(), minlength=len(CLASSES)) if len(table) else np.zeros(7)
        counts[split] = {c: int(hist[i]) for i, c in enumerate(CLASSES)}
    with open(out / "quarantine.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "reason", "emotion", "Usage"])
        w.writerows(quarantined)

    manifest = {
        "source": str(src.resolve()),
        "source_sha256": digest,
        "format": "fer2013-kaggle-csv",
        "variant": "original",
        "pipeline_version": PIPELINE_VERSION,
        "classes": list(CLASSES),
        "image": {"height": SIDE, "width": SIDE, "channels": 1, "dtype": "uint8"},
        "rows_in": total,
        "rows_written": total - len(quarantined),
        "rows_quarantined": len(quarantined),
        "counts": counts,
        "files": {s: f"{s}.parquet" for s in SPLITS},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return PreparedData(out, manifest)


def _first_line(e: BaseException) -> str:
    text = str(e)
    for line in text.splitlines():
        if "CSV parse error" in line or "ArrowInvalid" in line:
            return line.strip()
    return text.splitlines()[0] if text else repr(e)


def load_split(
    root: str | Path, split: str, *, with_labels: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``uint8 (N, 48, 48)`` and labels ``int64 (N,)`` of one split of a prepared directory.

    ``with_labels=False`` never reads the label column: the search gets PrivateTest images this way, so
    nothing in it can score against PrivateTest labels.
    """
    path = Path(root) / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: missing; run `fersearch data prepare` first")
    cols = ["image", "label"] if with_labels else ["image"]
    table = pq.read_table(path, columns=cols)
    flat = table.column("image").combine_chunks()
    buf = np.frombuffer(
        flat.buffers()[1], dtype=np.uint8, count=len(flat) * N_PIXELS, offset=flat.offset * N_PIXELS
    )
    images = buf.reshape(len(flat), SIDE, SIDE).copy()
    labels = table.column("label").to_numpy().astype(np.int64) if with_labels else None
    return images, labels
