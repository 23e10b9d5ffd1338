"""The on-disk records as typed objects (both ``manifest.json``, a checkpoint's ``trial.json``):
written then read back they are equal, and what the code before them wrote still loads (old
prepared datasets, searches and checkpoints keep working)."""

from __future__ import annotations

import hashlib
import json

import pytest

from data_pipeline import BaseVariant, DataManifest, ImageShape
from data_pipeline.dataset import CLASSES, DataError
from search.serving import ExportError, ExportManifest, ExportMember
from search.trial import TRIAL_FILE, TrialCheckpoint

SOURCE_SHA = "1553f929611600d810f15b0a05e0328e05c7a9624bcea89b22b7239067244d97"
SOURCE_OPTIONS = {
    "ferplus": None,
    "label_mode": "majority",
    "contempt": "keep",
    "split_fractions": [0.8, 0.1, 0.1],
}
PREPROCESS = {"size": 48, "equalize": "none", "roi": "auto", "roi_margin": 0.1}
IMAGE = {"height": 48, "width": 48, "channels": 1, "dtype": "uint8"}
FILES = {
    "Training": "Training.parquet",
    "PublicTest": "PublicTest.parquet",
    "PrivateTest": "PrivateTest.parquet",
}
COUNTS = {"Training": {"Angry": 12, "Happy": 20}, "PublicTest": {"Angry": 2, "Happy": 2},
          "PrivateTest": {"Angry": 2, "Happy": 2}}  # fmt: skip

# What ``prepare`` wrote before DataManifest (pipeline 0.2.0), keys in the order it wrote them: the
# original variant of a two-class FER2013 CSV, and a balanced variant derived from it.
OLD_ORIGINAL = {
    "source": "/data/fer2013.csv",
    "source_sha256": SOURCE_SHA,
    "format": "fer2013-kaggle-csv",
    "variant": "original",
    "seed": 0,
    "source_options": SOURCE_OPTIONS,
    "preprocess": PREPROCESS,
    "spec": {"kind": "fer2013", "sha256": SOURCE_SHA, "preprocess": PREPROCESS, "pipeline_version": "0.2.0"},
    "spec_sha256": "8b496adc725cf648cdff778355c2a3cc2adfdbd84132cd89374513166e067e79",
    "pipeline_version": "0.2.0",
    "classes": ["Angry", "Happy"],
    "image": IMAGE,
    "columns": ["row", "label", "image"],
    "rows_in": 40,
    "rows_written": 40,
    "rows_quarantined": 0,
    "rows_augmented": 0,
    "rows_total": 40,
    "quarantine_kinds": {},
    "counts": COUNTS,
    "class_weights": {"Angry": 1.333333, "Happy": 0.8},
    "files": FILES,
}
BALANCE = {"per_class": 16, "augment": {"rotation": 10.0, "mirror": True, "zoom": [1.1, 1.2]}}
OLD_BALANCED = {
    "source": "/data/fer2013.csv",
    "source_sha256": SOURCE_SHA,
    "format": "fer2013-kaggle-csv",
    "source_options": SOURCE_OPTIONS,
    "preprocess": PREPROCESS,
    "variant": "balanced",
    "variant_params": BALANCE,
    "seed": 0,
    "base": {"variant": "original", "root": "../original", "classes": ["Angry", "Happy"], "counts": COUNTS},
    "spec": {"variant": "balanced", "params": BALANCE, "seed": 0, "pipeline_version": "0.2.0",
             "base_spec_sha256": "8b496adc725cf648cdff778355c2a3cc2adfdbd84132cd89374513166e067e79"},
    "spec_sha256": "47995af5b5d02a6695dfbe3f782ed1d355f292ab93e8e2a983fa0facbd604a32",
    "pipeline_version": "0.2.0",
    "classes": ["Angry", "Happy"],
    "image": IMAGE,
    "columns": ["row", "label", "image", "aug"],
    "rows_in": 40,
    "rows_written": 36,
    "rows_quarantined": 4,
    "rows_augmented": 4,
    "rows_total": 40,
    "quarantine_kinds": {"undersampled": 4},
    "counts": {**COUNTS, "Training": {"Angry": 16, "Happy": 16}},
    "class_weights": {"Angry": 1.0, "Happy": 1.0},
    "files": FILES,
    "info": {"balance": {"per_class": 16, "augmented": {"Angry": 4}, "undersampled": {"Happy": 4},
                         "empty_classes": []}},
}  # fmt: skip


def _written(root, raw: dict):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    return root


@pytest.mark.parametrize("old", [OLD_ORIGINAL, OLD_BALANCED], ids=["original", "balanced"])
def test_an_old_data_manifest_loads_and_writes_back_the_same_keys(tmp_path, old):
    m = DataManifest.read(_written(tmp_path / "old", old))
    assert m.variant == old["variant"] and m.classes == ("Angry", "Happy") and m.counts == old["counts"]
    assert m.image == ImageShape(height=48, width=48) and m.rows_written == old["rows_written"]
    assert m.to_dict() == old
    # exports recorded the digest of the parsed dict; the typed manifest gives the same one
    assert m.sha256() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    (tmp_path / "new").mkdir()
    m.write(tmp_path / "new")
    assert DataManifest.read(tmp_path / "new") == m
    assert json.loads((tmp_path / "new" / "manifest.json").read_text()) == old


def test_an_original_data_manifest_is_written_byte_for_byte_as_before(tmp_path):
    old = _written(tmp_path / "old", OLD_ORIGINAL)
    DataManifest.read(old).write(tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == (old / "manifest.json").read_bytes()


def test_a_data_manifest_round_trips(tmp_path):
    m = DataManifest(
        variant="one-vs-rest",
        seed=3,
        base=BaseVariant(variant="filtered", root="../../filtered", classes=CLASSES, counts=COUNTS),
        classes=("Other", "Happy"),
        image=ImageShape(height=64, width=36),
        columns=("row", "label", "image"),
        rows_in=7,
        counts={"Training": {"Other": 3, "Happy": 4}},
        info={"one_vs_rest": {"positive": "Happy"}},
    )
    m.write(tmp_path)
    assert DataManifest.read(tmp_path) == m
    assert "spec" not in json.loads((tmp_path / "manifest.json").read_text())  # None fields are left out


def test_a_hand_made_data_manifest_takes_the_defaults(tmp_path):
    m = DataManifest.read(_written(tmp_path, {"counts": {"PublicTest": {"top": 9, "c0": 1}}}))
    assert m.classes == CLASSES and m.image is None and m.rows_written == 0 and m.variant is None


@pytest.mark.parametrize(
    "text, error",
    [
        (json.dumps(OLD_ORIGINAL)[:100], r"manifest\.json: not a readable JSON manifest"),
        ("[]", r"manifest\.json: holds a list, not a JSON object"),
        ('{"classes": ["Angry"]}', r"manifest\.json: missing key 'counts'"),
        ('{"counts": [1, 2]}', r"manifest\.json: key 'counts' has the wrong type"),
        ('{"counts": {"Training": {"Angry": "12"}}}', r"manifest\.json: key 'counts' has the wrong type"),
        ('{"counts": {}, "classes": "Angry"}', r"manifest\.json: key 'classes' has the wrong type"),
        ('{"counts": {}, "image": {"height": 48}}', r"manifest\.json: key 'image' has the wrong type"),
        ('{"counts": {}, "rows_in": true}', r"manifest\.json: key 'rows_in' has the wrong type"),
        ('{"counts": {}, "base": {"variant": "original"}}', r"manifest\.json: key 'base' has the wrong type"),
    ],
)
def test_a_damaged_data_manifest_names_the_file_and_key(tmp_path, text, error):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(DataError, match=error):
        DataManifest.read(tmp_path)
    assert DataManifest.try_read(tmp_path) is None  # a directory to build again, never one to use


def test_a_missing_data_manifest(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json: missing"):
        DataManifest.read(tmp_path)
    assert DataManifest.try_read(tmp_path) is None


# What ``export_ensemble`` wrote before ExportManifest (one untrained member, no data manifest).
OLD_EXPORT = {
    "format": "fersearch-ensemble/1",
    "classes": list(CLASSES),
    "input": {
        "height": 48,
        "width": 48,
        "channels": 1,
        "color": "grayscale",
        "dtype": "uint8",
        "normalize": {"scale": 0.00392156862745098, "mean": 0.5, "std": 0.5},
        "layout": "NCHW",
        "onnx_input": "float32 pixels 0..255, shape (N, 1, 48, 48); normalisation is inside the graph",
    },
    "preprocessing": {"grayscale": True, "resize": [48, 48], "interpolation": "area", "face_roi": None},
    "tta_flip": False,
    "output": "weighted mean of member softmax probabilities",
    "members": [
        {"file": "member_0.safetensors", "trial_id": "t0", "arch": "mini_xception", "arch_kwargs": {},
         "weight": 1.0, "val_acc": 0.5},
    ],
    "metrics": {},
    "data_manifest_sha256": None,
    "versions": {"fersearch": "0.1.0", "torch": "2.13.0+cpu", "onnx": "1.23.2", "onnxruntime": "1.32.0",
                 "safetensors": "0.8.0", "ray": "2.60.0", "optuna": "5.0.0",
                 "opencv-python-headless": "4.14.0.94"},
    "files": {"member_0.safetensors": "df2a0481ded27ac484a044a3055e38a192b7b098b2afa37a4755608f7b8126a1"},
}  # fmt: skip
MEMBER = ExportMember(file="member_0.safetensors", arch="vgg_fer11", arch_kwargs={"width": 0.5}, weight=0.75)


def test_an_old_export_manifest_loads_and_is_written_byte_for_byte_as_before(tmp_path):
    old = _written(tmp_path / "old", OLD_EXPORT)
    m = ExportManifest.read(old)
    assert m.classes == CLASSES and not m.tta_flip and m.data_manifest_sha256 is None
    assert m.members == (
        ExportMember(file="member_0.safetensors", trial_id="t0", arch="mini_xception", arch_kwargs={},
                     weight=1.0, val_acc=0.5),
    )  # fmt: skip
    assert m.preprocessing == OLD_EXPORT["preprocessing"] and m.to_dict() == OLD_EXPORT
    m.write(tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == (old / "manifest.json").read_bytes()


def test_an_export_manifest_round_trips(tmp_path):
    m = ExportManifest(
        classes=("Other", "Happy"),
        preprocessing={"roi": "face", "crop": "eyes-mouth"},
        tta_flip=True,
        members=(MEMBER, ExportMember(file="member_1.safetensors", trial_id="t3", arch="cnn5", arch_kwargs={},
                                      weight=0.25, val_acc=0.6)),
        metrics={"PublicTest": {"acc": 0.7}},
        data_manifest_sha256="ab" * 32,
        files={"member_0.safetensors": "0" * 64, "member_1.safetensors": "1" * 64},
    )  # fmt: skip
    m.write(tmp_path)
    assert ExportManifest.read(tmp_path) == m


def test_an_export_manifest_with_only_what_loading_needs_takes_the_defaults(tmp_path):
    member = {
        "file": "member_0.safetensors",
        "arch": "vgg_fer11",
        "arch_kwargs": {"width": 0.5},
        "weight": 0.75,
    }
    files = {"member_0.safetensors": "0" * 64}
    raw = {"format": "fersearch-ensemble/1", "classes": ["a", "b"], "members": [member], "files": files}
    m = ExportManifest.read(_written(tmp_path, raw))
    assert m.members == (MEMBER,) and m.classes == ("a", "b") and not m.tta_flip and m.metrics == {}
    assert m.preprocessing == OLD_EXPORT["preprocessing"] and m.input == OLD_EXPORT["input"]


@pytest.mark.parametrize(
    "change, error",
    [
        ({"tta_flip": "yes"}, r"manifest\.json: key 'tta_flip' has the wrong type; the export is damaged"),
        ({"preprocessing": ["roi"]}, r"manifest\.json: key 'preprocessing' has the wrong type"),
        (
            {"members": [{**OLD_EXPORT["members"][0], "trial_id": 3}]},
            r"members\[0\]\.trial_id has the wrong type",
        ),
        (
            {"members": [{**OLD_EXPORT["members"][0], "val_acc": True}]},
            r"members\[0\]\.val_acc has the wrong type",
        ),
    ],
)
def test_an_export_manifest_key_of_the_wrong_type_is_named(tmp_path, change, error):
    with pytest.raises(ExportError, match=error):
        ExportManifest.read(_written(tmp_path, {**OLD_EXPORT, **change}))


# ------------------------------------------------------------------------------- a checkpoint's trial.json

# What ``TrialCheckpoint.save`` wrote before ``SavedTrial`` (a Tune trial's epoch 3 of a 3-epoch plan) and
# what the merge net wrote (no per-epoch metrics, a ``merge`` block), keys in the order they were written.
OLD_TRIAL = {
    "config": {"arch": "mini_xception", "lr": 0.002, "dropout": 0.1, "arch_kwargs": {}, "max_epochs": 3},
    "metrics": {"epoch": 3, "val_acc": 0.41, "val_loss": 1.52},
    "best_val_acc": 0.41,
    "best_epoch": 3,
    "has_predictions": True,
    "plan": {"epochs": 3, "cycles": 1},
    "deadline": 1764800000.5,
    "optimizer": {"param_groups": [{"lr": 0.002, "params": [0, 1]}], "scalars": {"0": {"step": 3.0}}},
    "scheduler": {"last_epoch": 3},
    "numpy_rng": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}},
}
OLD_MERGE = {
    "config": {"arch": "parallel_merge", "arch_kwargs": {"bases": ["a", "b"]}, "dropout": 0.2},
    "best_val_acc": 0.5,
    "best_epoch": 2,
    "has_predictions": True,
    "merge": {"base_names": ["a", "b"], "val_acc": 0.5},
}


def test_an_old_trial_file_loads_and_is_written_byte_for_byte_as_before(tmp_path):
    (tmp_path / TRIAL_FILE).write_text(json.dumps(OLD_TRIAL, indent=2))
    saved = TrialCheckpoint(tmp_path).read()
    assert (saved.arch, saved.epoch, saved.val_acc, saved.val_loss) == ("mini_xception", 3, 0.41, 1.52)
    assert saved.plan == OLD_TRIAL["plan"] and saved.numpy_rng == OLD_TRIAL["numpy_rng"]
    TrialCheckpoint(tmp_path).write(saved)
    assert (tmp_path / TRIAL_FILE).read_text() == json.dumps(OLD_TRIAL, indent=2)


def test_the_merge_nets_trial_file_has_no_epoch_and_scores_its_best(tmp_path):
    (tmp_path / TRIAL_FILE).write_text(json.dumps(OLD_MERGE, indent=2))
    saved = TrialCheckpoint(tmp_path).read()
    assert (saved.epoch, saved.val_acc, saved.val_loss, saved.plan) == (0, 0.5, None, None)
    assert saved.merge == OLD_MERGE["merge"]


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"config": {"arch": "m"', r"trial\.json: not valid JSON \(.*line 1\); the checkpoint is damaged"),
        ('{"metrics": {}}', r"trial\.json: missing key 'config'; the checkpoint is damaged"),
        ("[1, 2]", r"trial\.json: missing key 'config'"),
    ],
)
def test_a_damaged_trial_file_names_the_file(tmp_path, text, error):
    (tmp_path / TRIAL_FILE).write_text(text)
    with pytest.raises(ValueError, match=error):
        TrialCheckpoint(tmp_path).read()
