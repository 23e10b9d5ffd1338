"""Image-file sources: CK+ (folder or .tar), JAFFE (.tiff names, face ROI), generic image folders."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline import synth
from data_pipeline.config import PrepareConfig, SourceConfig
from data_pipeline.dataset import CLASSES, CLASSES8, SPLITS, DataError, load_split
from data_pipeline.prepare import prepare
from tests.test_data_preprocess import face_photo

CK_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")


def quarantine(root: Path) -> dict[int, tuple[str, str, str]]:
    with open(root / "quarantine.csv", newline="") as f:
        return {int(r["row"]): (r["kind"], r["reason"], r["origin"]) for r in csv.DictReader(f)}


def subjects_by_split(root: Path) -> dict[str, set[str]]:
    import pyarrow.parquet as pq

    tables = {s: pq.read_table(root / f"{s}.parquet", columns=["subject"]) for s in SPLITS}
    return {s: set(t["subject"].to_pylist()) for s, t in tables.items()}


@pytest.fixture(scope="module")
def ckplus_dir(tmp_path_factory) -> Path:
    """CK+48 layout: 12 subjects, 3 frames per sequence, sequences spread over the 7 classes."""
    root = tmp_path_factory.mktemp("ck") / "CK+48"
    rng = np.random.default_rng(0)
    for subject in range(1, 13):
        for seq in range(1, 4):
            cls = CK_CLASSES[(subject + seq) % len(CK_CLASSES)]
            (root / cls).mkdir(parents=True, exist_ok=True)
            face = synth.draw_face(CK_CLASSES.index(cls) % 7, rng)
            for frame in range(10, 13):
                cv2.imwrite(str(root / cls / f"S{subject:03d}_{seq:03d}_{frame:08d}.png"), face)
    return root


def test_ckplus_subject_independent_splits_from_dir_and_tar(tmp_path, ray_local, ckplus_dir):
    a = prepare(PrepareConfig(SourceConfig("ckplus", ckplus_dir.parent)), tmp_path / "dir")
    m = a.manifest
    assert m.classes == CLASSES8 and m.rows_in == 108 and m.rows_written == 108
    subjects = subjects_by_split(a.root)
    assert all(subjects[s] for s in SPLITS)
    assert sum(map(len, subjects.values())) == len(set().union(*subjects.values())) == 12
    assert m.info["subjects"] == {s: sorted(v) for s, v in subjects.items()}
    contempt = sum(m.counts[s]["Contempt"] for s in SPLITS)
    assert contempt == 3 * sum(1 for s in range(1, 13) for q in range(1, 4) if (s + q) % 7 == 1)

    tar_path = tmp_path / "ckplus.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(ckplus_dir, arcname="CK+48")
    b = prepare(PrepareConfig(SourceConfig("ckplus", tar_path)), tmp_path / "tar")
    for s in SPLITS:
        assert (a.root / f"{s}.parquet").read_bytes() == (b.root / f"{s}.parquet").read_bytes()


def test_ckplus_contempt_to_disgust(tmp_path, ray_local, ckplus_dir):
    kept = prepare(PrepareConfig(SourceConfig("ckplus", ckplus_dir.parent)), tmp_path / "keep").manifest
    cfg = PrepareConfig(SourceConfig("ckplus", ckplus_dir.parent, contempt="disgust"))
    mapped = prepare(cfg, tmp_path / "map").manifest
    assert mapped.classes == CLASSES
    for s in SPLITS:
        assert mapped.counts[s]["Disgust"] == kept.counts[s]["Disgust"] + kept.counts[s]["Contempt"]


def test_ckplus_bad_files_are_quarantined_and_counted(tmp_path, ray_local):
    root = tmp_path / "CK+48"
    rng = np.random.default_rng(1)
    for subject in range(1, 7):
        (root / "happy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "happy" / f"S{subject:03d}_001_00000001.png"), synth.draw_face(3, rng))
    (root / "happy" / "S007_001_00000001.png").write_bytes(b"")
    (root / "happy" / "S008_001_00000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cv2.imwrite(str(root / "happy" / "portrait.png"), synth.draw_face(3, rng))
    (root / "bored").mkdir()
    cv2.imwrite(str(root / "bored" / "S009_001_00000001.png"), synth.draw_face(6, rng))
    (root / "README.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"CK\+48: 4 of 11 rows are bad .*first: row 0: class folder 'bored'"):
        prepare(PrepareConfig(SourceConfig("ckplus", root)), tmp_path / "strict")
    m = prepare(PrepareConfig(SourceConfig("ckplus", root), max_bad_fraction=0.5), tmp_path / "out").manifest
    assert m.rows_in == 11 and m.rows_written == 6 and m.rows_quarantined == 5  # + the skipped file
    q = quarantine(tmp_path / "out" / "original")
    reasons = {origin: why for _, why, origin in q.values()}
    assert reasons["happy/S007_001_00000001.png"] == "empty file"
    assert "cannot decode" in reasons["happy/S008_001_00000001.png"]
    assert "S<subject>" in reasons["happy/portrait.png"]
    assert "bored" in reasons["bored/S009_001_00000001.png"]
    assert m.info["skipped_non_image_files"]["first"] == ["README.txt"]


def test_jaffe_names_roi_and_subject_splits(tmp_path, ray_local):
    root = tmp_path / "jaffe"
    root.mkdir()
    codes = ("NE", "HA", "SA", "SU", "AN", "DI", "FE")
    k = 0
    for subject in ("KA", "KL", "KM", "KR", "MK", "NA"):
        for code in codes[:3]:
            cv2.imwrite(str(root / f"{subject}.{code}1.{k}.tiff"), face_photo(k))
            k += 1
    noise = np.random.default_rng(5).integers(0, 256, (256, 256), dtype=np.uint8)
    cv2.imwrite(str(root / "KA.NE2.99.tiff"), noise)
    cv2.imwrite(str(root / "KA_HA.tiff"), face_photo(0))
    cv2.imwrite(str(root / "KA.XX1.98.tiff"), face_photo(0))
    with pytest.raises(DataError, match=r"jaffe: 2 of 21 rows are bad .*\[KA\.XX1\.98\.tiff\]"):
        prepare(PrepareConfig(SourceConfig("jaffe", root)), tmp_path / "strict")
    m = prepare(PrepareConfig(SourceConfig("jaffe", root), max_bad_fraction=0.2), tmp_path / "out").manifest
    assert m.classes == CLASSES and m.rows_in == 21
    assert m.rows_written + m.rows_quarantined == 21
    q = quarantine(tmp_path / "out" / "original")
    kinds = {origin: kind for kind, _, origin in q.values()}
    assert kinds["KA.NE2.99.tiff"] == "no_face"
    assert kinds["KA_HA.tiff"] == kinds["KA.XX1.98.tiff"] == "bad"
    roi = m.info["roi"]
    assert roi["face"] == m.rows_written >= 12 and roi["no_face"] == m.quarantine_kinds["no_face"]
    x, _ = load_split(tmp_path / "out" / "original", "Training")
    assert x.shape[1:] == (48, 48) and x.std() > 10
    subjects = subjects_by_split(tmp_path / "out" / "original")
    assert sum(len(v) for v in subjects.values()) == len(set().union(*subjects.values()))


def _write_folder(root: Path, layout: dict[str, dict[str, int]], ext: str = ".png") -> None:
    rng = np.random.default_rng(2)
    for split, classes in layout.items():
        for cls, n in classes.items():
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                face = cv2.cvtColor(synth.draw_face(i % 7, rng), cv2.COLOR_GRAY2BGR)
                cv2.imwrite(str(d / f"{i:04d}{ext}"), face)


def test_folder_train_test_layout_carves_validation(tmp_path, ray_local):
    root = tmp_path / "kaggle"
    _write_folder(root, {"train": {"angry": 20, "happy": 30}, "test": {"angry": 5, "happy": 5}})
    m = prepare(PrepareConfig(SourceConfig("folder", root)), tmp_path / "out").manifest
    assert m.classes == CLASSES
    c = m.counts
    assert c["PrivateTest"]["Angry"] == 5 and c["PrivateTest"]["Happy"] == 5
    assert (c["Training"]["Angry"], c["PublicTest"]["Angry"]) == (18, 2)
    assert (c["Training"]["Happy"], c["PublicTest"]["Happy"]) == (27, 3)


def test_folder_generic_classes_flat_layout(tmp_path, ray_local):
    root = tmp_path / "mine"
    _write_folder(root, {"": {"calm": 20, "angry": 10}}, ext=".jpg")
    cfg = PrepareConfig(SourceConfig("folder", root, split_fractions=(0.6, 0.2, 0.2)))
    m = prepare(cfg, tmp_path / "o").manifest
    assert m.classes == ("angry", "calm")
    assert m.counts["Training"] == {"angry": 6, "calm": 12}
    assert m.counts["PublicTest"] == {"angry": 2, "calm": 4}
    assert m.counts["PrivateTest"] == {"angry": 2, "calm": 4}
    x, y = load_split(tmp_path / "o" / "original", "Training")
    assert x.shape == (18, 48, 48) and sorted(set(y.tolist())) == [0, 1]


def _fer2013_as_index_folders(csv_path: Path, root: Path) -> None:
    """FER2013 as others publish it: ``train|val|test/<0..6>/<row>.png`` from the Kaggle CSV, one stray
    non-image file among them."""
    import gzip

    folder = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    with gzip.open(csv_path, "rt") if csv_path.suffix == ".gz" else open(csv_path) as f:
        for i, row in enumerate(csv.DictReader(f)):
            d = root / folder[row["Usage"]] / row["emotion"]
            d.mkdir(parents=True, exist_ok=True)
            face = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
            cv2.imwrite(str(d / f"{i:05d}.png"), face)
    (root / "train" / "0" / "Thumbs.db").write_bytes(b"\x00stray")


def _by_pixels(root: Path, split: str) -> list[tuple[bytes, int]]:
    x, y = load_split(root, split)
    return sorted((img.tobytes(), int(label)) for img, label in zip(x, y, strict=True))


def test_fer2013_as_index_folders_with_class_names_equals_the_csv(tmp_path, ray_local):
    csv_path = synth.write_fer2013_csv(tmp_path / "fer2013.csv.gz", n_rows=300, seed=3)
    _fer2013_as_index_folders(csv_path, tmp_path / "folders")
    from_csv = prepare(PrepareConfig(SourceConfig("fer2013", csv_path)), tmp_path / "a")
    names = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
    cfg = PrepareConfig(SourceConfig("folder", tmp_path / "folders", class_names=names))
    from_folders = prepare(cfg, tmp_path / "b")
    a, b = from_csv.manifest, from_folders.manifest
    assert b.classes == a.classes == CLASSES
    assert b.counts == a.counts and b.rows_written == a.rows_written == 300
    assert b.rows_quarantined == 1 and b.rows_in == 301  # the stray file, counted
    for split in SPLITS:
        assert _by_pixels(from_folders.root, split) == _by_pixels(from_csv.root, split), split


def test_class_names_fix_the_order_and_quarantine_unnamed_folders(tmp_path, ray_local):
    root = tmp_path / "mine"
    _write_folder(root, {"": {"calm": 10, "Angry": 6, "bored": 2}})
    cfg = SourceConfig("folder", root, split_fractions=(0.6, 0.2, 0.2), class_names=("calm", "angry"))
    m = prepare(PrepareConfig(cfg, max_bad_fraction=0.5), tmp_path / "o").manifest
    assert m.classes == ("calm", "angry") and m.rows_written == 16 and m.rows_quarantined == 2
    assert sum(m.counts[s]["calm"] for s in SPLITS) == 10
    reasons = {r for _, r, _ in quarantine(tmp_path / "o" / "original").values()}
    assert reasons == {"class folder 'bored' is not one of --class-names (calm, angry)"}
    index = tmp_path / "index"
    _write_folder(index, {"": {"0": 4, "1": 4, "7": 1}})
    cfg = SourceConfig("folder", index, split_fractions=(0.5, 0.25, 0.25), class_names=("a", "b"))
    m = prepare(PrepareConfig(cfg, max_bad_fraction=0.5), tmp_path / "i").manifest
    assert m.classes == ("a", "b") and m.rows_quarantined == 1
    (reason,) = {r for _, r, _ in quarantine(tmp_path / "i" / "original").values()}
    assert reason == "class folder '7' is past the 2 --class-names (a, b)"


@pytest.mark.parametrize(
    ("kind", "names", "words"),
    [
        ("folder", ("a", "A"), "--class-names names A, a more than once"),
        ("folder", ("a", ""), "expected names like Angry,Happy,Neutral"),
        ("ckplus", ("a", "b"), "--class-names applies to --source folder, not ckplus"),
    ],
)
def test_bad_class_names_are_one_clear_error(tmp_path, kind, names, words):
    with pytest.raises(DataError, match=words):
        SourceConfig(kind, tmp_path, class_names=names)
