from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from data_pipeline.fer2013 import CLASSES, DataError, load_split
from data_pipeline.prepare import prepare_fer2013
from tests.conftest import SHARED_DATA, write_kaggle_csv


def _pixels(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    img = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
    return img, " ".join(map(str, img.ravel()))


def _good_rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, images = [], []
    usages = ["Training"] * (n - 2 * (n // 5)) + ["PublicTest"] * (n // 5) + ["PrivateTest"] * (n // 5)
    for i, usage in enumerate(usages):
        img, pix = _pixels(rng)
        rows.append((i % 7, pix, usage))
        images.append(img)
    return rows, images


def test_prepare_roundtrip_counts_and_manifest(tmp_path, ray_local):
    rows, images = _good_rows(40)
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    prepared = prepare_fer2013(src, tmp_path / "out")
    m = prepared.manifest
    assert m.rows_in == 40 and m.rows_written == 40 and m.rows_quarantined == 0
    assert sum(m.counts["Training"].values()) == 24
    assert m.counts["PublicTest"] == {
        c: sum(1 for r in rows[24:32] if r[0] == i) for i, c in enumerate(CLASSES)
    }
    x, y = load_split(prepared.root, "Training")
    assert x.dtype == np.uint8 and x.shape == (24, 48, 48)
    np.testing.assert_array_equal(x, np.stack(images[:24]))
    np.testing.assert_array_equal(y, [r[0] for r in rows[:24]])
    x_test, y_test = load_split(prepared.root, "PrivateTest", with_labels=False)
    assert y_test is None and x_test.shape == (8, 48, 48)
    assert json.loads((prepared.root / "manifest.json").read_text())["source_sha256"] == m.source_sha256


def test_gzip_and_determinism(tmp_path, ray_local):
    rows, _ = _good_rows(30, seed=3)
    plain = write_kaggle_csv(tmp_path / "fer.csv", rows)
    gz = tmp_path / "fer.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    a = prepare_fer2013(plain, tmp_path / "a")
    b = prepare_fer2013(gz, tmp_path / "b")
    c = prepare_fer2013(plain, tmp_path / "c")
    for split in ("Training", "PublicTest", "PrivateTest"):
        assert (a.root / f"{split}.parquet").read_bytes() == (c.root / f"{split}.parquet").read_bytes()
        np.testing.assert_array_equal(load_split(a.root, split)[0], load_split(b.root, split)[0])


def test_prepared_dir_is_reused(tmp_path, ray_local):
    rows, _ = _good_rows(20)
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    first = prepare_fer2013(src, tmp_path / "out")
    stamp = (first.root / "Training.parquet").stat().st_mtime_ns
    prepare_fer2013(src, tmp_path / "out")
    assert (first.root / "Training.parquet").stat().st_mtime_ns == stamp


def test_bad_rows_are_quarantined_with_reasons(tmp_path, ray_local):
    rows, _ = _good_rows(30)
    rng = np.random.default_rng(9)
    _, pix = _pixels(rng)
    rows[3] = (2, " ".join(pix.split()[:100]), "Training")
    rows[7] = (9, pix, "Training")
    rows[11] = (1, pix.replace(" ", " x", 1), "Training")
    rows[12] = (1, pix, "Validation")
    rows[13] = ("angry", pix, "Training")
    rows[14] = (1, "300 " + " ".join(pix.split()[1:]), "Training")
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    prepared = prepare_fer2013(src, tmp_path / "out", max_bad_fraction=0.5)
    m = prepared.manifest
    assert m.rows_in == 30
    assert m.rows_quarantined == 6
    assert m.rows_written + m.rows_quarantined == m.rows_in
    assert sum(sum(c.values()) for c in m.counts.values()) == m.rows_written
    with open(prepared.root / "quarantine.csv") as f:
        q = {int(r["row"]): r["reason"] for r in csv.DictReader(f)}
    assert set(q) == {3, 7, 11, 12, 13, 14}
    assert "100 values" in q[3]
    assert "out of range" in q[7]
    assert "non-integer" in q[11]
    assert "Validation" in q[12]
    assert "not an integer" in q[13]
    assert "0..255" in q[14]


def test_too_many_bad_rows_fail_naming_file_and_row(tmp_path, ray_local):
    rows, _ = _good_rows(10)
    rows[4] = (1, "1 2 3", "Training")
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    with pytest.raises(DataError, match=r"fer\.csv.*row 4: pixels has 3 values"):
        prepare_fer2013(src, tmp_path / "out", max_bad_fraction=0.0)


def test_wrong_header_and_missing_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,pixels,split\n0,1 2,Training\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 0 \(header\)"):
        prepare_fer2013(bad, tmp_path / "out")
    with pytest.raises(DataError, match="no such file"):
        prepare_fer2013(tmp_path / "nope.csv", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "fer2013.csv.gz").is_file(), reason="needs ../shared/data")
def test_real_fer2013_counts_match_known_table(real_fer2013):
    m = real_fer2013.manifest  # prepare_fer2013 of the real CSV, shared with test_data_real.py (conftest.py)
    assert m.source_sha256 == "aee2206a1e4bdc0155d31e955aa5d747083ca7e0e89d2ba9a64ef431b3f9144a"
    assert m.rows_in == 35887 and m.rows_quarantined == 0
    expected = {
        "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
        "PublicTest": [467, 56, 496, 895, 653, 415, 607],
        "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
    }
    for split, counts in expected.items():
        assert [m.counts[split][c] for c in CLASSES] == counts


def test_malformed_csv_line_names_the_file(tmp_path, ray_local):
    rows, _ = _good_rows(10)
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    text = src.read_text().splitlines()
    text[5] = text[5] + ",extra"
    src.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"fer\.csv: malformed CSV.*Expected 3 columns"):
        prepare_fer2013(src, tmp_path / "out")


def test_truncated_gzip_names_the_file(tmp_path, ray_local):
    rows, _ = _good_rows(30)
    plain = write_kaggle_csv(tmp_path / "fer.csv", rows)
    data = gzip.compress(plain.read_bytes(), mtime=0)
    gz = tmp_path / "cut.csv.gz"
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.csv\.gz: malformed CSV: cannot read past row \d+"):
        prepare_fer2013(gz, tmp_path / "out")


def test_many_blocks_keep_source_order(tmp_path, ray_local):
    from data_pipeline.synth import write_fer2013_csv

    src = write_fer2013_csv(tmp_path / "fer.csv", n_rows=5000, seed=5)
    with open(src, newline="") as f:
        data = list(csv.DictReader(f))
    prepared = prepare_fer2013(src, tmp_path / "out", parallelism=4)
    row = 0
    for split in ("Training", "PublicTest", "PrivateTest"):
        x, y = load_split(prepared.root, split)
        expected = [r for r in data if r["Usage"] == split]
        assert len(x) == len(expected)
        for k in (0, len(x) // 2, len(x) - 1):
            assert " ".join(map(str, x[k].ravel())) == expected[k]["pixels"]
        np.testing.assert_array_equal(y, [int(r["emotion"]) for r in expected])
        row += len(x)
    assert row == 5000 == prepared.manifest.rows_written


def test_a_split_is_decoded_and_a_file_hashed_once_per_process(tmp_path, ray_local, monkeypatch):
    import pyarrow.parquet as pq

    from data_pipeline import dataset

    rows, images = _good_rows(20, seed=5)
    src = write_kaggle_csv(tmp_path / "fer.csv", rows)
    prepared = prepare_fer2013(src, tmp_path / "out")
    reads, hashes = [], []
    read_table, hash_of = pq.read_table, dataset._sha256_of.__wrapped__
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: reads.append(a[0]) or read_table(*a, **k))
    x, y = load_split(prepared.root, "PublicTest")
    x[:] = 0  # a caller's copy: the next load is unchanged
    again, _ = load_split(prepared.root, "PublicTest")
    np.testing.assert_array_equal(again, np.stack(images[12:16]))
    assert len(reads) == 1
    dataset._sha256_of.cache_clear()
    monkeypatch.setattr(
        dataset, "_sha256_of", dataset.functools.lru_cache(lambda key: hashes.append(key) or hash_of(key))
    )
    assert dataset.sha256_file(src) == dataset.sha256_file(src)
    src.write_text(src.read_text() + f"0,{rows[0][1]},Training\n")  # a new version of the file is hashed anew
    dataset.sha256_file(src)
    assert len(hashes) == 2
