"""FER+ votes: Barsoum et al.'s majority / probability rules, the ferplus source, alignment errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import ferplus
from data_pipeline.config import PrepareConfig, SourceConfig
from data_pipeline.dataset import CLASSES8, DataError, load_split
from data_pipeline.prepare import prepare
from tests.conftest import write_kaggle_csv

# FER+ column order: neutral happiness surprise sadness anger disgust fear contempt unknown NF
VOTES = [
    [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 0 Neutral
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # 1 not a face (empty image name)
    [4, 0, 0, 4, 2, 0, 0, 0, 0, 0],  # 2 tie
    [0, 0, 0, 0, 0, 0, 0, 0, 6, 4],  # 3 unknown
    [0, 0, 0, 0, 4, 0, 0, 6, 0, 0],  # 4 contempt
    [0, 5, 4, 0, 0, 0, 0, 0, 0, 0],  # 5 sums to 9
    [1, 3, 1, 1, 1, 1, 1, 1, 0, 0],  # 6 single votes are outliers
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 7 malformed: no votes
    [2, 2, 2, 2, 2, 0, 0, 0, 0, 0],  # 8 spread
    [0, 0, 6, 0, 0, 0, 0, 0, 0, 4],  # 9 surprise, NF second
]
USAGE = ["Training"] * 8 + ["PublicTest", "PrivateTest"]


def ours(v: list[int]) -> np.ndarray:
    out = np.zeros(10, dtype=np.int64)
    out[[6, 3, 5, 4, 0, 1, 2, 7, 8, 9]] = v
    return out


def write_votes(path: Path, votes: list[list[int]], usage: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ferplus.HEADER)
        for i, (v, u) in enumerate(zip(votes, usage, strict=True)):
            w.writerow([u, "" if v[9] == 10 else f"fer{i:07d}.png", *v])
    return path


def write_pair(tmp: Path, votes=VOTES, usage=USAGE, fer_usage=None) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    rows = [
        (i % 7, " ".join(map(str, rng.integers(0, 256, 2304))), u)
        for i, u in enumerate(fer_usage or usage)
    ]
    return write_kaggle_csv(tmp / "fer2013.csv", rows), write_votes(tmp / "fer2013new.csv", votes, usage)


def test_majority_rule():
    labels, reasons = ferplus.majority_labels(np.stack([ours(v) for v in VOTES]))
    idx = {c: i for i, c in enumerate(CLASSES8)}
    n, c, h, s = idx["Neutral"], idx["Contempt"], idx["Happy"], idx["Surprise"]
    expected = [n, -1, -1, -1, c, h, h, -1, -1, s]
    assert labels.tolist() == expected
    assert "not a face" in reasons[1] and "unknown" in reasons[3]
    assert "more than half" in reasons[2] and "more than half" in reasons[8]
    assert reasons[0] is None and reasons[5] is None


def test_probability_rule():
    soft, labels, reasons = ferplus.probability_labels(np.stack([ours(v) for v in VOTES]))
    idx = {c: i for i, c in enumerate(CLASSES8)}
    assert labels[[1, 3, 7, 8]].tolist() == [-1] * 4
    assert all(reasons[i] for i in (1, 3, 7, 8))
    np.testing.assert_allclose(soft[2][[idx["Neutral"], idx["Sad"]]], [0.5, 0.5])
    assert labels[2] == idx["Sad"]
    np.testing.assert_allclose(soft[4][[idx["Contempt"], idx["Angry"]]], [0.6, 0.4])
    np.testing.assert_allclose(soft[5][[idx["Happy"], idx["Surprise"]]], [5 / 9, 4 / 9], rtol=1e-6)
    assert soft[6][idx["Happy"]] == 1 and soft[9][idx["Surprise"]] == 1
    kept = labels >= 0
    np.testing.assert_allclose(soft[kept].sum(1), 1, rtol=1e-6)


def test_ferplus_source_majority_and_probability(tmp_path, ray_local):
    fer, votes = write_pair(tmp_path)
    cfg = PrepareConfig(SourceConfig("ferplus", fer), max_bad_fraction=0.5)
    m = prepare(cfg, tmp_path / "maj").manifest
    assert m.classes == CLASSES8
    assert m.rows_in == 10 and m.rows_written == 5
    assert m.rows_written + m.rows_quarantined == m.rows_in
    assert m.quarantine_kinds == {"bad": 1, "label": 4}
    assert m.counts["Training"]["Contempt"] == 1 and m.counts["Training"]["Happy"] == 2
    assert m.info["ferplus"]["rows_without_image_name"] == 1
    assert m.info["ferplus"]["rows_vote_sum_not_10"] == 1
    assert m.info["ferplus"]["dropped_by_label_rule"] == 4
    assert m.source_sha256 != m.spec["votes_sha256"]
    x, y = load_split(tmp_path / "maj" / "original", "Training")
    assert y.tolist() == [6, 7, 3, 3]

    cfg = PrepareConfig(SourceConfig("ferplus", fer, label_mode="probability"), max_bad_fraction=0.5)
    prob = prepare(cfg, tmp_path / "prob")
    assert prob.manifest.rows_written == 6
    x, y, soft = load_split(prob.root, "Training", with_soft=True)
    assert soft.shape == (5, 8) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(y, soft.argmax(1))
    assert load_split(tmp_path / "maj" / "original", "Training", with_soft=True)[2] is None


def test_misaligned_votes_fail_naming_file_and_row(tmp_path, ray_local):
    fer, _ = write_pair(tmp_path)
    short = write_votes(tmp_path / "short.csv", VOTES[:-1], USAGE[:-1])
    with pytest.raises(DataError, match=r"short\.csv: 9 data rows but .*fer2013\.csv has 10"):
        prepare(PrepareConfig(SourceConfig("ferplus", fer, ferplus=short)), tmp_path / "a")
    swapped = list(USAGE)
    swapped[3] = "PublicTest"
    moved = write_votes(tmp_path / "moved.csv", VOTES, swapped)
    with pytest.raises(DataError, match=r"moved\.csv: row 3: Usage 'PublicTest' but row 3 of .*'Training'"):
        prepare(PrepareConfig(SourceConfig("ferplus", fer, ferplus=moved)), tmp_path / "b")


def test_votes_header_and_missing_votes(tmp_path):
    fer, votes = write_pair(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("Usage,name,neutral\nTraining,x,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 0 \(header\)"):
        ferplus.read_votes(bad)
    votes.unlink()
    with pytest.raises(DataError, match="needs the FER\\+ votes"):
        prepare(PrepareConfig(SourceConfig("ferplus", fer)), tmp_path / "out")
