"""Integration on the real benchmarks in ../shared/data (FER2013, FER+ votes, CK+48)."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_pipeline.config import PrepareConfig, SourceConfig, VariantConfig
from data_pipeline.dataset import CLASSES, CLASSES8, SPLITS, load_split
from data_pipeline.prepare import prepare
from tests.conftest import SHARED_DATA

FER = SHARED_DATA / "fer2013.csv.gz"
VOTES = SHARED_DATA / "fer2013new.csv"
CKPLUS = SHARED_DATA / "ckplus.tar"
KNOWN = {
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
    "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
}
pytestmark = pytest.mark.slow
needs_fer = pytest.mark.skipif(not (FER.is_file() and VOTES.is_file()), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def fer_out(real_fer2013):
    """Where the FER2013 variants go: beside the session's prepared original (conftest.py), their base."""
    return real_fer2013.root.parent


@needs_fer
def test_fer2013_original_and_balanced(fer_out):
    cfg = PrepareConfig(SourceConfig("fer2013", FER, ferplus=VOTES), variant=VariantConfig("balanced"))
    b = prepare(cfg, fer_out)
    o = b.root.parent / "original"
    assert b.manifest.base.counts == {s: dict(zip(CLASSES, KNOWN[s], strict=True)) for s in SPLITS}
    assert b.manifest.source_sha256 == "aee2206a1e4bdc0155d31e955aa5d747083ca7e0e89d2ba9a64ef431b3f9144a"
    assert b.manifest.counts["Training"] == dict.fromkeys(CLASSES, 8000)
    assert b.manifest.rows_in == 35887 and b.manifest.rows_augmented == 56000 - 28709
    assert b.manifest.rows_written + b.manifest.rows_quarantined == 35887
    for s in SPLITS[1:]:
        np.testing.assert_array_equal(load_split(o, s)[0], load_split(b.root, s)[0])
    x, y = load_split(b.root, "Training")
    assert x.shape == (56000, 48, 48) and np.bincount(y).tolist() == [8000] * 7


def _clear_disagreements(share: float, max_original: int) -> int:
    """Rows whose FER+ winner is another FER2013 class with ≥ share of the votes, counted straight from
    the two CSV files (FER+ columns: neutral happiness surprise sadness anger disgust fear ...)."""
    with gzip.open(FER, "rt", newline="") as f:
        original = np.array([int(r["emotion"]) for r in csv.DictReader(f)])
    with open(VOTES, newline="") as f:
        rows = list(csv.reader(f))[1:]
    ferplus_to_fer = [6, 3, 5, 4, 0, 1, 2]
    n = 0
    for label, rec in zip(original, rows, strict=True):
        votes = [int(x) for x in rec[2:]]
        best = max(range(10), key=lambda k: (votes[k], -k))
        if best < 7 and votes[best] >= share * sum(votes) and ferplus_to_fer[best] != label:
            n += votes[ferplus_to_fer.index(label)] <= max_original
    return n


@needs_fer
def test_fer2013_filtered_by_ferplus_votes(fer_out):
    cfg = PrepareConfig(SourceConfig("fer2013", FER, ferplus=VOTES), variant=VariantConfig("filtered"))
    m = prepare(cfg, fer_out).manifest
    info = m.info["filter"]
    assert info["filter_by"] == ["votes"]
    assert info["dropped_nonface_votes"] >= 173
    assert info["relabelled"] == _clear_disagreements(share=0.7, max_original=1) > 1000
    assert m.rows_written == 35887 - info["dropped_nonface_votes"]
    assert m.quarantine_kinds == {"filtered": info["dropped_nonface_votes"]}


@needs_fer
def test_ferplus_majority_has_eight_classes(tmp_path, ray_local):
    m = prepare(PrepareConfig(SourceConfig("ferplus", FER, ferplus=VOTES)), tmp_path).manifest
    assert m.classes == CLASSES8
    for s in SPLITS:
        assert all(m.counts[s][c] > 0 for c in CLASSES8), m.counts[s]
    fp = m.info["ferplus"]
    assert fp["rows"] == 35887 and fp["rows_without_image_name"] == 173 and fp["rows_vote_sum_not_10"] == 1
    assert m.rows_written + m.rows_quarantined == 35887
    assert m.quarantine_kinds["label"] == fp["dropped_by_label_rule"] >= 173
    assert 30000 < m.rows_written < 35887


@pytest.mark.skipif(not CKPLUS.is_file(), reason="needs ../shared/data/ckplus.tar")
def test_ckplus_subject_independent_splits(tmp_path, ray_local):
    p = prepare(PrepareConfig(SourceConfig("ckplus", CKPLUS)), tmp_path)
    m = p.manifest
    assert m.rows_in == 981 and m.rows_written == 981
    total = {c: sum(m.counts[s][c] for s in SPLITS) for c in CLASSES8}
    readme = {"Angry": 135, "Disgust": 177, "Fear": 75, "Happy": 207, "Sad": 84, "Surprise": 249}
    assert total == {**readme, "Neutral": 0, "Contempt": 54}
    tables = {s: pq.read_table(p.split_path(s), columns=["subject"]) for s in SPLITS}
    subjects = {s: set(t["subject"].to_pylist()) for s, t in tables.items()}
    assert sum(len(v) for v in subjects.values()) == len(set().union(*subjects.values())) == 118
    assert all(subjects[s] for s in SPLITS)
    n_train = sum(m.counts["Training"].values())
    assert 0.7 < n_train / 981 < 0.9
