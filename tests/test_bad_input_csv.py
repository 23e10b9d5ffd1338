"""Malformed lines in a Kaggle CSV are bad rows like any other: quarantined with their line number and
reason, counted against ``max_bad_fraction``, and never the end of the whole prepare."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from data_pipeline.fer2013 import DataError, load_split
from data_pipeline.prepare import prepare_fer2013
from data_pipeline.synth import write_fer2013_csv

N = 60


@pytest.fixture()
def clean(tmp_path):
    return write_fer2013_csv(tmp_path / "clean.csv", n_rows=N, seed=4)


def quarantine(root) -> list[dict]:
    with open(root / "quarantine.csv", newline="") as f:
        return list(csv.DictReader(f))


def damaged(clean, path, edits: dict[int, bytes], tail: bytes = b"") -> tuple:
    """``clean`` with some data lines (0-based data row → new bytes, or b"" to insert before) changed."""
    lines = clean.read_bytes().splitlines(keepends=True)
    header, data = lines[0], lines[1:]
    out = []
    for i, line in enumerate(data):
        if i in edits:
            out.append(edits[i])
        out.append(line)
    path.write_bytes(header + b"".join(out) + tail)
    return path


def test_every_kind_of_malformed_line_is_quarantined_with_line_and_reason(clean, tmp_path, ray_local):
    lines = clean.read_bytes().splitlines()
    row = lines[5]
    e, pixels, usage = row.split(b",")
    edits = {
        3: row + b",extra\n",  # extra field
        10: b";".join((e, pixels, usage)) + b"\n",  # wrong delimiter
        20: row[:300] + b"\n",  # cut short mid-file
        30: e + b"," + pixels[:20] + b"\xff\xfe" + pixels[20:] + b"," + usage + b"\n",  # not UTF-8
        40: b"\n",  # blank
    }
    src = damaged(clean, tmp_path / "bad.csv", edits, tail=row[:200])  # and a truncated last line
    prepared = prepare_fer2013(src, tmp_path / "out", max_bad_fraction=0.2)
    m = prepared.manifest
    assert m.rows_in == N + 6
    assert m.rows_written == N and m.rows_written + m.rows_quarantined == m.rows_in
    assert m.quarantine_kinds == {"bad": 5, "blank": 1}
    q = {int(r["row"]): r for r in quarantine(prepared.root)}
    # inserted before data row i → source row i + (edits before it); line = row + 2
    expected = {
        3: "wrong field count: Expected 3 columns, got 4",
        11: "wrong delimiter: fields separated by ';'",
        22: "wrong field count: Expected 3 columns, got 2",
        33: "bad encoding: not UTF-8 (byte 0xff",
        44: "empty line",
        N + 5: "truncated line: the file ends inside this line (Expected 3 columns, got 2)",
    }
    assert set(q) == set(expected)
    for r, why in expected.items():
        assert q[r]["reason"].startswith(why), q[r]
        assert q[r]["origin"].startswith(f"line {r + 2}: "), q[r]
    assert q[3]["origin"].endswith(",extra") and len(q[3]["origin"]) < 80
    # the good rows are exactly the clean file's rows, in order
    ref = prepare_fer2013(clean, tmp_path / "ref")
    for split in ("Training", "PublicTest", "PrivateTest"):
        for a, b in zip(load_split(ref.root, split), load_split(prepared.root, split), strict=True):
            np.testing.assert_array_equal(a, b)


def test_over_the_limit_names_counts_per_kind_and_first_lines(clean, tmp_path, ray_local):
    row = clean.read_bytes().splitlines()[7]
    edits = {i: row[:100] + b"\n" for i in (2, 4, 6, 8, 10)} | {
        i: row.replace(b",", b";") + b"\n" for i in (30, 31)
    }
    src = damaged(clean, tmp_path / "bad.csv", edits)
    with pytest.raises(DataError) as err:
        prepare_fer2013(src, tmp_path / "out", max_bad_fraction=0.05)
    msg = str(err.value)
    assert msg.startswith(f"{src}: malformed CSV: 7 of {N + 7} rows are bad (> 5.0% allowed): ")
    assert "wrong field count 5 (line 4, line 7, line 10, …)" in msg
    assert "wrong delimiter 2 (line 37, line 39)" in msg
    assert "first: row 2: wrong field count: Expected 3 columns, got 2 [line 4: " in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists()  # a refused prepare leaves no folder behind
    # under the limit the same file prepares
    m = prepare_fer2013(src, tmp_path / "ok", max_bad_fraction=0.2).manifest
    assert (m.rows_in, m.rows_written, m.rows_quarantined) == (N + 7, N, 7)


def test_value_errors_and_quoted_fields(clean, tmp_path, ray_local):
    lines = clean.read_bytes().splitlines()
    e, pixels, usage = lines[1].split(b",")
    edits = {
        0: b'"' + e + b'","' + pixels + b'","' + usage + b'"\n',  # a spreadsheet's quoting: still a good row
        1: b'0,"' + pixels + b",Training\n",  # a stray quote does not swallow the next lines
    }
    src = damaged(clean, tmp_path / "q.csv", edits)
    m = prepare_fer2013(src, tmp_path / "out", max_bad_fraction=0.1).manifest
    assert (m.rows_in, m.rows_written, m.rows_quarantined) == (N + 2, N + 1, 1)
    (r,) = quarantine(tmp_path / "out")
    assert r["row"] == "2" and "non-integer" in r["reason"] and r["origin"].startswith("line 4: emotion=0")
