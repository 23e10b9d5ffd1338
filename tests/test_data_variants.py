"""Variants: balanced, filtered (FER+ votes / Viola–Jones), filtered-balanced, one-vs-rest; caching and
determinism; class weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_pipeline import ferplus, synth
from data_pipeline.config import PrepareConfig, SourceConfig, VariantConfig
from data_pipeline.dataset import CLASSES, SPLITS, DataError, load_split
from data_pipeline.prepare import prepare, prepare_one_vs_rest

N_ROWS = 600
PER_CLASS = 100
# Our class index → FER+ vote column (neutral happiness surprise sadness anger disgust fear contempt unk NF).
FERPLUS_COL = {0: 4, 1: 5, 2: 6, 3: 1, 4: 3, 5: 2, 6: 0}


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> tuple[Path, np.ndarray, dict[str, list[int]]]:
    """A synthetic FER2013 CSV and aligned FER+ votes: mostly agreeing, a few non-faces, clear mislabels,
    and disagreements that must not be relabelled (original label has 2 votes; winner has only 6/10)."""
    root = tmp_path_factory.mktemp("fer")
    csv_path = synth.write_fer2013_csv(root / "fer2013.csv", n_rows=N_ROWS, seed=4)
    with open(csv_path, newline="") as f:
        data = list(csv.DictReader(f))
    labels = np.array([int(r["emotion"]) for r in data])
    cases: dict[str, list[int]] = {"nonface": [], "relabel": [], "weak": [], "mild": []}
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ferplus.HEADER)
        for i, r in enumerate(data):
            v = [0] * 10
            v[FERPLUS_COL[labels[i]]] = 8
            v[8] = 2
            if i % 50 == 7:
                v = [0] * 9 + [10]
                cases["nonface"].append(i)
            elif i % 50 == 19 and labels[i] != 3:
                v = [0, 9, 0, 0, 0, 0, 0, 0, 1, 0]
                cases["relabel"].append(i)
            elif i % 50 == 31 and labels[i] != 3:
                v = [0, 8, 0, 0, 0, 0, 0, 0, 0, 0]
                v[FERPLUS_COL[labels[i]]] = 2
                cases["weak"].append(i)
            elif i % 50 == 43 and labels[i] not in (3, 6):
                v = [4, 6, 0, 0, 0, 0, 0, 0, 0, 0]
                cases["mild"].append(i)
            w.writerow([r["Usage"], "" if v[9] == 10 else f"fer{i:07d}.png", *v])
    return csv_path, labels, cases


def cfg(path: Path, **variant) -> PrepareConfig:
    return PrepareConfig(SourceConfig("fer2013", path), variant=VariantConfig(**variant))


def rows_of(root: Path, split: str, columns=("row", "label", "aug")) -> dict[str, list]:
    t = pq.read_table(root / f"{split}.parquet")
    return {c: t[c].to_pylist() for c in columns if c in t.column_names}


def test_balanced_exact_counts_and_untouched_eval_splits(tmp_path, ray_local, fer):
    path, labels, _ = fer
    b = prepare(cfg(path, name="balanced", per_class=PER_CLASS), tmp_path)
    o = prepare(cfg(path), tmp_path)
    m, om = b.manifest, o.manifest
    assert m.counts["Training"] == dict.fromkeys(CLASSES, PER_CLASS)
    for s in SPLITS[1:]:
        assert m.counts[s] == om.counts[s]
        np.testing.assert_array_equal(load_split(b.root, s)[0], load_split(o.root, s)[0])
    info = m.info["balance"]
    train = om.counts["Training"]
    assert info["augmented"] == {c: PER_CLASS - n for c, n in train.items() if n < PER_CLASS}
    assert info["undersampled"] == {c: n - PER_CLASS for c, n in train.items() if n > PER_CLASS}
    assert m.rows_augmented == sum(info["augmented"].values())
    assert m.rows_written + m.rows_quarantined == m.rows_in == N_ROWS
    assert m.quarantine_kinds == {"undersampled": sum(info["undersampled"].values())}
    assert m.class_weights == dict.fromkeys(CLASSES, 1.0)
    assert m.base.counts == om.counts and m.base.variant == "original"

    t = rows_of(b.root, "Training")
    x, y = load_split(b.root, "Training")
    ox, oy = load_split(o.root, "Training")
    orig = dict(zip(rows_of(o.root, "Training")["row"], ox, strict=True))
    for k, (row, aug) in enumerate(zip(t["row"], t["aug"], strict=True)):
        assert y[k] == labels[row]
        if aug == 0:
            np.testing.assert_array_equal(x[k], orig[row])
        else:
            assert not np.array_equal(x[k], orig[row])
            assert abs(float(x[k].mean()) - float(orig[row].mean())) < 40
    copies = [r for r, a in zip(t["row"], t["aug"], strict=True) if a > 0 and labels[r] == 1]
    per_source = np.bincount(np.unique(copies, return_inverse=True)[1])
    assert per_source.max() - per_source.min() <= 1


def test_same_seed_same_bytes_other_seed_differs_and_cache(tmp_path, ray_local, fer):
    path, _, _ = fer
    a = prepare(cfg(path, name="balanced", per_class=60), tmp_path / "a")
    b = prepare(cfg(path, name="balanced", per_class=60), tmp_path / "b")
    for s in SPLITS:
        assert a.split_path(s).read_bytes() == b.split_path(s).read_bytes()
    assert (a.root / "quarantine.csv").read_bytes() == (b.root / "quarantine.csv").read_bytes()
    variant = VariantConfig("balanced", per_class=60)
    other = PrepareConfig(SourceConfig("fer2013", path), variant=variant, seed=1)
    c = prepare(other, tmp_path / "c")
    assert a.split_path("Training").read_bytes() != c.split_path("Training").read_bytes()
    assert a.split_path("PublicTest").read_bytes() == c.split_path("PublicTest").read_bytes()

    prepare(cfg(path), tmp_path / "d")
    from_disk = prepare(cfg(path, name="balanced", per_class=60), tmp_path / "d")
    for s in SPLITS:
        assert a.split_path(s).read_bytes() == from_disk.split_path(s).read_bytes()

    stamp = a.split_path("Training").stat().st_mtime_ns
    base_stamp = (tmp_path / "a" / "original" / "Training.parquet").stat().st_mtime_ns
    again = prepare(cfg(path, name="balanced", per_class=60), tmp_path / "a")
    assert again.split_path("Training").stat().st_mtime_ns == stamp
    assert (tmp_path / "a" / "original" / "Training.parquet").stat().st_mtime_ns == base_stamp
    bigger = prepare(cfg(path, name="balanced", per_class=70), tmp_path / "a")
    assert bigger.manifest.counts["Training"] == dict.fromkeys(CLASSES, 70)
    assert (tmp_path / "a" / "original" / "Training.parquet").stat().st_mtime_ns == base_stamp


def test_filtered_by_votes_drops_nonfaces_and_relabels_clear_mislabels(tmp_path, ray_local, fer):
    path, labels, cases = fer
    f = prepare(cfg(path, name="filtered"), tmp_path)
    m = f.manifest
    info = m.info["filter"]
    assert info["filter_by"] == ["votes"]
    assert info["dropped_nonface_votes"] == len(cases["nonface"])
    assert info["relabelled"] == len(cases["relabel"])
    assert sum(info["relabelled_pairs"].values()) == len(cases["relabel"])
    assert m.quarantine_kinds == {"filtered": len(cases["nonface"])}
    assert m.rows_written == N_ROWS - len(cases["nonface"])
    got = {}
    for s in SPLITS:
        t = rows_of(f.root, s)
        got.update(zip(t["row"], t["label"], strict=True))
    assert not set(cases["nonface"]) & set(got)
    assert all(got[i] == 3 for i in cases["relabel"])
    assert all(got[i] == labels[i] for i in cases["weak"] + cases["mild"])
    assert cases["weak"] and cases["mild"]
    unchanged = set(got) - set(cases["relabel"])
    assert all(got[i] == labels[i] for i in unchanged)

    lines = (path.parent / "fer2013new.csv").read_text().splitlines()
    lines[1] = lines[1].replace("Training,", "PrivateTest,", 1)
    moved = tmp_path / "moved.csv"
    moved.write_text("\n".join(lines) + "\n")
    source = SourceConfig("fer2013", path, ferplus=moved)
    misaligned = PrepareConfig(source, variant=VariantConfig("filtered"))
    with pytest.raises(DataError, match=r"moved\.csv: row 0: Usage 'PrivateTest' but the source row 0"):
        prepare(misaligned, tmp_path)

    fb = prepare(cfg(path, name="filtered-balanced", per_class=PER_CLASS), tmp_path).manifest
    assert fb.counts["Training"] == dict.fromkeys(CLASSES, PER_CLASS)
    assert fb.base.variant == "filtered" and fb.base.counts == m.counts
    assert fb.counts["PublicTest"] == m.counts["PublicTest"]


def test_filtered_by_faces_drops_blank_images(tmp_path, ray_local):
    rng = np.random.default_rng(3)
    lines = ["emotion,pixels,Usage"]
    for i in range(24):
        img = synth.draw_face(i % 7, rng) if i % 4 else np.full((48, 48), 128 + i, np.uint8)
        lines.append(f"{i % 7},{' '.join(map(str, img.ravel()))},{SPLITS[i % 3]}")
    src = tmp_path / "fer.csv"
    src.write_text("\n".join(lines) + "\n")
    m = prepare(cfg(src, name="filtered"), tmp_path / "out").manifest
    info = m.info["filter"]
    assert info["filter_by"] == ["faces"] and info["relabelled"] == 0
    q = {}
    with open(tmp_path / "out" / "filtered" / "quarantine.csv", newline="") as f:
        q = {int(r["row"]): r["reason"] for r in csv.DictReader(f)}
    assert {0, 4, 8, 12, 16, 20} <= set(q)
    assert all("no face" in why for why in q.values())
    assert info["dropped_no_face"] == len(q) < 12
    with pytest.raises(DataError, match="needs FER\\+ votes"):
        prepare(cfg(src, name="filtered", filter_by="votes"), tmp_path / "out")


def test_one_vs_rest_per_paper(tmp_path, ray_local, fer):
    path, labels, _ = fer
    size = 50
    o = prepare(cfg(path, ovr_base="original"), tmp_path).manifest
    ovr = {"name": "one-vs-rest", "ovr_size": size, "ovr_base": "original"}
    happy = prepare(cfg(path, positive="happy", **ovr), tmp_path)
    m = happy.manifest
    assert m.classes == ("Other", "Happy")
    assert m.counts["Training"] == {"Other": size, "Happy": size}
    moved = o.counts["Training"]["Happy"] - size
    assert m.info["one_vs_rest"]["positive_moved_to_validation"] == moved > 0
    assert m.counts["PublicTest"]["Happy"] == o.counts["PublicTest"]["Happy"] + moved
    assert m.counts["PrivateTest"]["Happy"] == o.counts["PrivateTest"]["Happy"]
    assert sum(m.counts["PrivateTest"].values()) == sum(o.counts["PrivateTest"].values())
    taken = m.info["one_vs_rest"]["other_taken"]
    assert sum(taken.values()) == size and max(taken.values()) - min(v for v in taken.values()) <= 10
    assert m.rows_written + m.rows_quarantined == m.rows_in
    t = rows_of(happy.root, "Training")
    assert all((labels[r] == 3) == bool(y) for r, y in zip(t["row"], t["label"], strict=True))

    disgust = prepare(cfg(path, positive="Disgust", **ovr), tmp_path)
    d = disgust.manifest
    assert d.counts["Training"] == {"Other": size, "Disgust": size}
    assert d.info["one_vs_rest"]["positive_augmented"] == size - o.counts["Training"]["Disgust"]
    assert disgust.root == tmp_path / "one-vs-rest" / "Disgust"
    with pytest.raises(DataError, match="--positive"):
        prepare(cfg(path, name="one-vs-rest", positive="joy"), tmp_path)


def test_one_vs_rest_all_classes_on_filtered(tmp_path, ray_local, fer):
    path, _, _ = fer
    built = prepare_one_vs_rest(cfg(path, name="one-vs-rest", ovr_size=30), tmp_path)
    assert sorted(built) == sorted(CLASSES)
    for name, p in built.items():
        assert p.manifest.counts["Training"] == {"Other": 30, name: 30}
        assert p.manifest.base.variant == "filtered"


def test_class_weights_are_inverse_frequency(tmp_path, ray_local, fer):
    path, _, _ = fer
    m = prepare(cfg(path), tmp_path).manifest
    counts = m.counts["Training"]
    n = sum(counts.values())
    for c, w in m.class_weights.items():
        assert w == pytest.approx(n / (len(CLASSES) * counts[c]), rel=1e-5)
    assert m.class_weights["Disgust"] > 1 > m.class_weights["Happy"]
    on_disk = json.loads((tmp_path / "original" / "manifest.json").read_text())
    assert on_disk["class_weights"] == m.class_weights
