"""FER2013 Kaggle CSV (``emotion,pixels,Usage``, plain or ``.gz``) → decoded rows, on Ray Data.

The driver cuts the file into byte ranges of whole lines (a ``.gz`` is first inflated once, since a gzip
stream cannot be split, overlapping Ray's start-up when it can). Ray Data tasks read their range and
decode the pixel strings in parallel (Arrow's split and checked cast for a clean batch; a batch with bad
rows takes a vectorised byte-level parse and names each bad row's problem). Every line is a row: a line
that is not three comma-separated fields (wrong count or delimiter, cut short, not UTF-8) is a bad row
like any other, and a blank line is quarantined as ``blank``, so one broken line never stops the prepare.
Rows are numbered from their range, so bad rows are quarantined with their source row and line number
whatever order the tasks finish in.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from data_pipeline import preprocess as pp
from data_pipeline.config import PreprocessConfig
from data_pipeline.dataset import (
    CLASSES,
    PIPELINE_VERSION,
    SIDE,
    SPLITS,
    DataError,
    PreparedData,
    Quarantined,
    Rows,
    image_array,
    load_split,
    sha256_file,
)
from data_pipeline.engine import batches, ensure_ray, first_error_line

__all__ = [
    "CLASSES",
    "CSV_PROBLEMS",
    "HEADER",
    "PIPELINE_VERSION",
    "SPLITS",
    "DataError",
    "PreparedData",
    "check_header",
    "load_split",
    "read_fer2013",
    "sha256_file",
]

HEADER: tuple[str, ...] = ("emotion", "pixels", "Usage")
N_PIXELS = SIDE * SIDE
_CSV_ERRORS = ("CSV", "ArrowInvalid")
# Kinds of lines that are not a row of three fields (the prefix of their quarantine reason).
CSV_PROBLEMS = frozenset({"wrong field count", "wrong delimiter", "truncated line", "bad encoding"})


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def check_header(path: Path, header: tuple[str, ...] = HEADER) -> None:
    try:
        with _open_text(Path(path)) as f:
            got = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a (gzipped) CSV: {e}") from e
    if got is None:
        raise DataError(f"{path}: file is empty, expected header {','.join(header)}")
    if tuple(h.strip() for h in got) != header:
        raise DataError(f"{path}: row 0 (header) is {','.join(got)!r}, expected {','.join(header)!r}")


def parse_pixels(col: pa.Array, n_values: int = N_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Space-separated decimal strings → uint8 ``(n, n_values)`` and a per-row ok mask, in one
    vectorised pass over the string bytes (any run of spaces separates). For a batch with bad rows:
    rows it rejects (wrong count, a non-digit, > 255, empty) go to :func:`decode_pixels` for a reason."""
    n = len(col)
    out = np.zeros((n, n_values), dtype=np.uint8)
    if n == 0:
        return out, np.zeros(0, dtype=bool)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    wide = pa.types.is_large_string(col.type)
    itemsize = 8 if wide else 4
    offs = np.frombuffer(
        col.buffers()[1], dtype=np.int64 if wide else np.int32, count=n + 1, offset=col.offset * itemsize
    ).astype(np.int64)
    data_buf = col.buffers()[2]
    lo, hi = int(offs[0]), int(offs[-1])
    buf = np.frombuffer(data_buf, dtype=np.uint8)[lo:hi] if data_buf is not None else np.zeros(0, np.uint8)
    rs, re = offs[:-1] - lo, offs[1:] - lo

    def per_row(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(positions, re) - np.searchsorted(positions, rs)

    digit = (buf >= 48) & (buf <= 57)
    bad_char = per_row(np.flatnonzero(~(digit | (buf == 32)))) > 0
    prev = np.zeros_like(digit)
    prev[1:] = digit[:-1]
    nxt = np.zeros_like(digit)
    nxt[:-1] = digit[1:]
    filled = re > rs
    prev[rs[filled]] = False
    nxt[re[filled] - 1] = False
    starts = np.flatnonzero(digit & ~prev)
    ends = np.flatnonzero(digit & ~nxt) + 1
    length = ends - starts
    val = buf[ends - 1].astype(np.int32) - 48
    two, three = length >= 2, length >= 3
    val[two] += 10 * (buf[ends[two] - 2].astype(np.int32) - 48)
    val[three] += 100 * (buf[ends[three] - 3].astype(np.int32) - 48)
    bad_tok = np.flatnonzero((length > 3) | (val > 255))
    first, last = np.searchsorted(starts, rs), np.searchsorted(starts, re)
    n_bad = np.searchsorted(bad_tok, last) - np.searchsorted(bad_tok, first)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    ok = valid & ~bad_char & (last - first == n_values) & (n_bad == 0)
    if ok.all():
        out[:] = val.astype(np.uint8).reshape(n, n_values)
    elif ok.any():
        out[ok] = val[first[ok][:, None] + np.arange(n_values)].astype(np.uint8)
    return out, ok


def fast_pixels(col: pa.Array, n_values: int = N_PIXELS) -> np.ndarray | None:
    """Arrow's split + checked cast: the quickest parse of a clean batch; None if any row is not clean."""
    try:
        parts = pc.split_pattern(col, " ")
        lengths = pc.list_value_length(parts)
        if lengths.null_count or pc.min_max(lengths).as_py() != {"min": n_values, "max": n_values}:
            return None
        flat = pc.cast(pc.list_flatten(parts), pa.uint8()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return flat.reshape(len(col), n_values)


def decode_pixels(s: str | None, n_values: int = N_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """One pixel string the slow, forgiving way (any whitespace): the image or why it is bad."""
    if s is None or not s.strip():
        return None, "pixels field is empty"
    tokens = s.split()
    if len(tokens) != n_values:
        return None, f"pixels has {len(tokens)} values, expected {n_values}"
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        return None, f"pixels has a non-integer value {bad!r}"
    if values.min() < 0 or values.max() > 255:
        return None, f"pixel value out of range 0..255 (min {values.min()}, max {values.max()})"
    return values.astype(np.uint8), None


def _labels(raw: pa.Array, n_classes: int) -> tuple[np.ndarray, list[str | None]]:
    errors: list[str | None] = [None] * len(raw)
    try:
        cast = pc.cast(pc.utf8_trim_whitespace(raw), pa.int64())
        nulls = np.asarray(cast.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values = pc.fill_null(cast, -1).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = np.full(len(raw), -1, dtype=np.int64)
        nulls = np.zeros(len(raw), dtype=bool)
        for i, lab in enumerate(raw.to_pylist()):
            try:
                values[i] = int(str(lab).strip())
            except (TypeError, ValueError):
                errors[i] = f"emotion {lab!r} is not an integer"
    for i in np.flatnonzero(nulls | (values < 0) | (values >= n_classes)):
        if errors[i] is None:
            errors[i] = (
                "emotion is empty"
                if nulls[i]
                else f"emotion {int(values[i])} out of range 0..{n_classes - 1}"
            )
    return np.where((values >= 0) & (values < n_classes), values, -1).astype(np.int8), errors


def decode_batch(batch: pa.Table, pre: PreprocessConfig | None = None) -> pa.Table:
    """Ray Data UDF: validate and decode one batch of raw CSV rows (then preprocess, if asked).

    Returns split (-1 when bad), label, image, error / kind (null when fine) and the raw emotion and Usage
    strings (for the quarantine file and the FER+ alignment check)."""
    pre = pre or PreprocessConfig()
    raw_emotion = batch.column("emotion").combine_chunks().cast(pa.string())
    usage = batch.column("Usage").combine_chunks().cast(pa.string())
    n = len(batch)
    pixels = batch.column("pixels").combine_chunks()
    fast = fast_pixels(pixels) if n else None
    images, ok = (fast, np.ones(n, dtype=bool)) if fast is not None else parse_pixels(pixels)
    errors: list[str | None] = [None] * n
    kinds: list[str | None] = [None] * n
    if not ok.all():
        for i in np.flatnonzero(~ok):
            img, errors[i] = decode_pixels(pixels[int(i)].as_py())
            if img is not None:
                images[i] = img
    labels, label_errors = _labels(raw_emotion, len(CLASSES))
    split = pc.index_in(pc.utf8_trim_whitespace(usage), value_set=pa.array(SPLITS)).to_numpy(
        zero_copy_only=False
    )
    split = np.nan_to_num(np.asarray(split, dtype=np.float64), nan=-1).astype(np.int8)
    for i in range(n):
        if errors[i] is None and label_errors[i] is not None:
            errors[i] = label_errors[i]
        if errors[i] is None and split[i] < 0:
            errors[i] = f"Usage {usage[i].as_py()!r} is not one of {', '.join(SPLITS)}"
        if errors[i] is not None:
            kinds[i] = "bad"
    out = images.reshape(n, SIDE, SIDE)
    if not pre.identity_for(SIDE, SIDE):
        cv2_threads_off()
        out = np.zeros((n, pre.size, pre.size), dtype=np.uint8)
        for i in range(n):
            if errors[i] is None:
                img, _, no_face = pp.preprocess(images[i].reshape(SIDE, SIDE), pre)
                if img is None:
                    errors[i], kinds[i] = no_face, "no_face"
                else:
                    out[i] = img
    for i in range(n):
        if errors[i] is not None:
            split[i] = -1
    return pa.table(
        {
            "split": pa.array(split, pa.int8()),
            "label": pa.array(labels, pa.int8()),
            "image": image_array(out),
            "error": pa.array(errors, pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "raw_emotion": raw_emotion,
            "usage": usage,
        }
    )


def cv2_threads_off() -> None:
    """One OpenCV thread per Ray task: Ray already runs one task per core."""
    import cv2

    cv2.setNumThreads(1)


CHUNK_BYTES = 8 << 20


def line_ranges(path: Path, n: int | None = None) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of whole lines covering a plain CSV's data rows (header excluded):
    ``n`` of them, or one per ``CHUNK_BYTES``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.readline()
        cuts = [f.tell()]
        n = n or max(1, -(-(size - cuts[0]) // CHUNK_BYTES))
        for k in range(1, n):
            f.seek(cuts[0] + k * (size - cuts[0]) // n)
            f.readline()
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def inflate(src: Path, scratch: Path) -> Path:
    """A gzip stream cannot be split: inflate it once so tasks can read line ranges in parallel."""
    plain = scratch / src.with_suffix("").name
    try:
        with gzip.open(src, "rb") as f, open(plain, "wb") as out:
            shutil.copyfileobj(f, out, 4 << 20)
    except (OSError, EOFError) as e:
        with open(plain, "rb") as part:
            done = max(0, sum(block.count(b"\n") for block in iter(lambda: part.read(4 << 20), b"")) - 1)
        raise DataError(f"{src}: malformed CSV: cannot read past row {done}: {e}") from e
    return plain


def _snippet(text: str, width: int = 60) -> str:
    """A malformed line, shortened for the quarantine file (a FER2013 line is ~8 kB of pixels)."""
    return text if len(text) <= width else f"{text[: width - 20]} … {text[-14:]}"


def structure_problem(text: str, n_fields: int, expected: int = len(HEADER), last: bool = False) -> str:
    """Why a line does not split into ``expected`` comma-separated fields, as ``<kind>: <detail>``."""
    if not text.strip():
        return "empty line"
    for sep in (";", "\t", "|"):
        if sep not in "," and len(text.split(sep)) == expected:
            return f"wrong delimiter: fields separated by {sep!r}, expected ','"
    got = f"Expected {expected} columns, got {n_fields}"
    if last and n_fields < expected:
        return f"truncated line: the file ends inside this line ({got})"
    return f"wrong field count: {got}"


def _fix_encoding(data: bytes) -> tuple[bytes, dict[int, str]]:
    """Lines that are not UTF-8 (by index in ``data``), and ``data`` with them made decodable (U+FFFD) so
    the CSV reader keeps one record per line. Only called for a range holding a non-ASCII byte."""
    lines = data.splitlines(keepends=True)
    bad: dict[int, str] = {}
    for k, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad[k] = f"bad encoding: not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})"
            lines[k] = line.decode("utf-8", "replace").encode()
    return (b"".join(lines), bad) if bad else (data, bad)


def _read_records(data: bytes) -> tuple[pa.Table, list]:
    """One record per line (no quoting, blank lines kept): the well-formed records and the others."""
    invalid: list = []

    def keep_aside(row) -> str:
        invalid.append(row)
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=list(HEADER), use_threads=False),
        parse_options=pacsv.ParseOptions(
            quote_char=False, ignore_empty_lines=False, invalid_row_handler=keep_aside
        ),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(HEADER, pa.string())),
    )
    return table, invalid


def _unquote(table: pa.Table) -> pa.Table:
    """Fields written as ``"..."`` (a spreadsheet's export) read as their content."""
    cols = [pc.replace_substring_regex(table[c], r'^"(.*)"$', r"\1") for c in HEADER]
    return pa.table(dict(zip(HEADER, cols, strict=True)))


def parse_range(batch: pa.Table, pre: PreprocessConfig) -> pa.Table:
    """Ray Data UDF: read one line range of the CSV and decode it; rows are tagged with their chunk and
    position in it. Every line is a row: lines that do not split into the three fields (wrong count or
    delimiter, cut short, not UTF-8, blank) come back as bad rows with the reason and the line's text."""
    out = []
    columns = [batch[c].to_pylist() for c in ("chunk", "path", "start", "end", "size")]
    for chunk, path, start, end, size in zip(*columns, strict=True):
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        data, encoding = (data, {}) if data.isascii() else _fix_encoding(data)
        table, invalid = _read_records(data)
        if b'"' in data:
            table = _unquote(table)
        n = len(table) + len(invalid)
        bad_at = np.array([r.number - 1 for r in invalid], dtype=np.int64)
        good_at = np.setdiff1d(np.arange(n, dtype=np.int64), bad_at)
        decoded = decode_batch(table, pre)
        errors = decoded["error"].to_pylist()
        kinds = decoded["kind"].to_pylist()
        cut = end == size and not data.endswith((b"\n", b"\r"))  # the file's last line has no newline
        blank = any(e == "pixels field is empty" for e in errors)
        lines = data.splitlines() if blank else []
        for j in np.flatnonzero(pc.is_valid(decoded["error"]).to_numpy(zero_copy_only=False)):
            at = int(good_at[j])
            if at in encoding:
                errors[j], kinds[j] = encoding[at], "bad"
            elif lines and not lines[at].strip():
                errors[j], kinds[j] = "empty line", "blank"
            elif cut and at == n - 1:
                errors[j] = f"truncated line: the file ends inside this line ({errors[j]})"
        for name, values in (("error", errors), ("kind", kinds)):
            decoded = decoded.set_column(
                decoded.schema.get_field_index(name), name, pa.array(values, pa.string())
            )
        decoded = decoded.append_column("text", pa.nulls(len(decoded), pa.string()))
        decoded = decoded.append_column("local", pa.array(good_at))
        if invalid:
            reasons = [
                encoding.get(r.number - 1)
                or structure_problem(r.text, r.actual_columns, r.expected_columns, cut and r.number == n)
                for r in invalid
            ]
            k = len(invalid)
            side = pre.size
            malformed = pa.table(
                {
                    "split": pa.array(np.full(k, -1, np.int8)),
                    "label": pa.array(np.full(k, -1, np.int8)),
                    "image": image_array(np.zeros((k, side, side), np.uint8)),
                    "error": pa.array(reasons, pa.string()),
                    "kind": pa.array(["blank" if w == "empty line" else "bad" for w in reasons], pa.string()),
                    "raw_emotion": pa.nulls(k, pa.string()),
                    "usage": pa.nulls(k, pa.string()),
                    "text": pa.array([r.text for r in invalid], pa.string()),
                    "local": pa.array(bad_at),
                }
            )
            decoded = pa.concat_tables([decoded, malformed])
        out.append(decoded.append_column("chunk", pa.array(np.full(len(decoded), chunk, dtype=np.int32))))
    return pa.concat_tables(out)


def read_fer2013(
    src: Path, pre: PreprocessConfig, *, scratch: Path | None = None, parallelism: int | None = None
) -> tuple[Rows, pa.Array]:
    """All rows of a Kaggle-layout CSV (bad ones quarantined), plus every row's raw ``Usage`` string.

    Ray Data tasks read and decode line ranges of the file (a ``.gz`` is first inflated into ``scratch``,
    which must be visible to every node, while Ray starts). Rows are numbered from each range's position
    and row count, not from the order tasks finish in."""
    import ray
    import ray.data

    check_header(src)
    with tempfile.TemporaryDirectory(prefix=".inflate-", dir=scratch) as tmp:
        if src.suffix != ".gz":
            plain = src
            ensure_ray()
        elif ray.is_initialized():
            plain = inflate(src, Path(tmp))
        else:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(inflate, src, Path(tmp))
                ensure_ray()
                plain = pending.result()
        ranges = line_ranges(plain, parallelism)
        if not ranges:
            raise DataError(f"{src}: no data rows after the header")
        size = plain.stat().st_size
        blocks = [
            pa.table({"chunk": [i], "path": [str(plain.resolve())], "start": [a], "end": [b], "size": [size]})
            for i, (a, b) in enumerate(ranges)
        ]
        ds = ray.data.from_arrow(blocks)
        ds = ds.map_batches(parse_range, batch_format="pyarrow", batch_size=1, fn_kwargs={"pre": pre})
        try:
            parts = list(batches(ds))
        except Exception as e:  # Ray wraps a reader failure; name the file with Arrow's own line
            why = first_error_line(e, _CSV_ERRORS)
            if why is None:
                raise
            raise DataError(f"{src}: malformed CSV: {why}") from e
    table = pa.concat_tables(parts)
    chunk = table["chunk"].to_numpy()
    sizes = np.bincount(chunk, minlength=len(ranges))
    rows = (np.cumsum(sizes) - sizes)[chunk] + table["local"].to_numpy()
    order = np.argsort(rows, kind="stable")
    table = table.take(pa.array(order))
    rows = rows[order]
    total = int(sizes.sum())
    if total == 0:
        raise DataError(f"{src}: no data rows after the header")
    bad = np.asarray(pc.is_valid(table["error"]).to_numpy(zero_copy_only=False), dtype=bool)
    quarantine = []
    for i in np.flatnonzero(bad):
        line = int(rows[i]) + 2  # every line is a row: line 1 is the header
        text = table["text"][i].as_py()
        origin = (
            f"line {line}: {_snippet(text)}"
            if text is not None
            else f"line {line}: emotion={table['raw_emotion'][i].as_py()} Usage={table['usage'][i].as_py()}"
        )
        quarantine.append(
            Quarantined(int(rows[i]), table["kind"][i].as_py(), table["error"][i].as_py(), origin)
        )
    good = table.select(["split", "label", "image"]).filter(pa.array(~bad))
    good = good.add_column(0, "row", pa.array(rows[~bad], pa.int64()))
    return Rows(good, quarantine, total, CLASSES, pre.size, pre.size), table["usage"].combine_chunks()
