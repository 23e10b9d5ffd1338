import gzip
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import synth

N_PIXELS = synth.SIDE * synth.SIDE


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return synth.generate(5000, seed=0)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_fer2013_csv(tmp_path_factory.mktemp("synth") / "fer2013.csv", n_rows=200, seed=3)


def parse_csv(text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Strict parser for the Kaggle layout: fails on anything a lenient CSV reader would paper over."""
    assert text.endswith("\n")
    header, *rows = text[:-1].split("\n")
    assert header == "emotion,pixels,Usage"
    labels, images, usage = [], [], []
    for row in rows:
        label, pixels, split = row.split(",")
        values = pixels.split(" ")
        assert len(values) == N_PIXELS
        assert all(v == str(int(v)) for v in values), "pixels must be plain decimal ints"
        labels.append(int(label))
        images.append(np.array(values, dtype=np.int64))
        usage.append(split)
    return np.array(labels), np.stack(images), usage


def test_csv_layout(small_csv: Path) -> None:
    data = small_csv.read_bytes()
    assert b"\r" not in data and b'"' not in data
    labels, images, usage = parse_csv(data.decode("ascii"))
    assert len(labels) == 200
    assert set(labels.tolist()) <= set(range(7))
    assert images.min() >= 0 and images.max() <= 255
    assert set(usage) == set(synth.USAGES)
    blocks = [u for i, u in enumerate(usage) if i == 0 or usage[i - 1] != u]
    assert blocks == list(synth.USAGES), "Usage must come as Training, PublicTest, PrivateTest blocks"
    assert [usage.count(u) for u in synth.USAGES] == [160, 20, 20]


def test_csv_matches_generate(small_csv: Path) -> None:
    labels, images, usage = parse_csv(small_csv.read_text("ascii"))
    ref_images, ref_labels, ref_usage = synth.generate(200, seed=3)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(images.reshape(-1, 48, 48), ref_images)
    assert usage == ref_usage.tolist()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = synth.write_fer2013_csv(tmp_path / "a.csv", n_rows=60, seed=7).read_bytes()
    b = synth.write_fer2013_csv(tmp_path / "b.csv", n_rows=60, seed=7).read_bytes()
    c = synth.write_fer2013_csv(tmp_path / "c.csv", n_rows=60, seed=8).read_bytes()
    assert a == b
    assert a != c


def test_gzip_round_trip_and_deterministic(tmp_path: Path) -> None:
    plain = synth.write_fer2013_csv(tmp_path / "fer2013.csv", n_rows=60, seed=5)
    gz1 = synth.write_fer2013_csv(tmp_path / "x" / "fer2013.csv.gz", n_rows=60, seed=5)
    gz2 = synth.write_fer2013_csv(tmp_path / "y" / "other.csv.gz", n_rows=60, seed=5)
    raw = gz1.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0 for reproducible output"
    assert raw == gz2.read_bytes(), "gzip bytes must not depend on the output path"
    assert gzip.decompress(raw) == plain.read_bytes()


def test_creates_parent_dirs_and_returns_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "fer2013.csv"
    assert synth.write_fer2013_csv(str(target), n_rows=30) == target
    assert target.is_file()
    assert [p.name for p in target.parent.iterdir()] == ["fer2013.csv"], "temporary file left behind"


def test_too_few_rows_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 30"):
        synth.generate(29)
    with pytest.raises(ValueError, match=">= 30"):
        synth.write_fer2013_csv(tmp_path / "fer2013.csv", n_rows=5)
    assert not (tmp_path / "fer2013.csv").exists()


def test_minimum_rows_gives_all_splits() -> None:
    images, labels, usage = synth.generate(30, seed=1)
    assert images.shape == (30, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert [int((usage == u).sum()) for u in synth.USAGES] == [24, 3, 3]


def test_draw_face_contract() -> None:
    rng = np.random.default_rng(0)
    faces = [synth.draw_face(e, rng) for e in range(len(synth.CLASSES))]
    for face in faces:
        assert face.shape == (48, 48) and face.dtype == np.uint8
        assert face.std() > 10, "a face should not be a flat image"
    with pytest.raises(ValueError):
        synth.draw_face(7, rng)
    with pytest.raises(ValueError):
        synth.draw_face(-1, rng)


def test_class_proportions(dataset) -> None:
    _, labels, usage = dataset
    target = synth.CLASS_PROPORTIONS / synth.CLASS_PROPORTIONS.sum()
    for split in synth.USAGES:
        freq = np.bincount(labels[usage == split], minlength=7) / (usage == split).sum()
        np.testing.assert_allclose(freq, target, atol=0.015, err_msg=split)
    assert np.bincount(labels).argmax() == synth.CLASSES.index("Happy")
    assert np.bincount(labels).argmin() == synth.CLASSES.index("Disgust")


@pytest.mark.parametrize("n_rows", [70, 700])
def test_every_class_in_every_split_small(n_rows: int) -> None:
    _, labels, usage = synth.generate(n_rows, seed=11)
    for split in synth.USAGES:
        assert set(labels[usage == split].tolist()) == set(range(7)), split


def test_every_class_in_every_split(dataset) -> None:
    _, labels, usage = dataset
    for split in synth.USAGES:
        assert (np.bincount(labels[usage == split], minlength=7) > 0).all(), split


def ridge_classifier(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                     lam: float) -> tuple[float, float]:
    """Least-squares one-hot classifier; returns (accuracy, mean per-class recall) on the test rows."""
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
    z = np.hstack([(features - mu) / sd, np.ones((len(features), 1))])
    onehot = np.eye(7)[labels[train]]
    w = np.linalg.solve(z[train].T @ z[train] + lam * np.eye(z.shape[1]), z[train].T @ onehot)
    pred = (z[test] @ w).argmax(1)
    truth = labels[test]
    return float((pred == truth).mean()), float(np.mean([(pred[truth == c] == c).mean() for c in range(7)]))


def test_classes_learnable_but_not_trivial(dataset) -> None:
    images, labels, usage = dataset
    n = len(images)
    pixels16 = images.astype(np.float64).reshape(n, 16, 3, 16, 3).mean((2, 4)).reshape(n, -1)
    acc, recall = ridge_classifier(pixels16, labels, usage == "Training", usage == "PublicTest", lam=100.0)
    majority = np.bincount(labels[usage == "Training"]).max() / (usage == "Training").sum()
    assert acc > majority + 0.07, f"linear pixel classifier accuracy {acc:.3f} barely beats majority"
    assert recall > 1 / 7 + 0.1, f"mean per-class recall {recall:.3f} too close to chance"
    assert acc < 0.85, f"linear pixel classifier accuracy {acc:.3f}: classes are trivially separable"


def test_no_global_intensity_shortcut(dataset) -> None:
    images, labels, usage = dataset
    flat = images.reshape(len(images), -1).astype(np.float64)
    stats = np.stack([flat.mean(1), flat.std(1)], 1)
    _, recall = ridge_classifier(stats, labels, usage == "Training", usage == "PublicTest", lam=1.0)
    assert recall < 0.2, f"brightness/contrast alone predict the class (recall {recall:.3f})"
