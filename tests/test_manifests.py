"""The two ``manifest.json`` records as typed objects: written then read back they are equal, and what the
code before them wrote still loads (old prepared datasets and searches keep working)."""

from __future__ import annotations

import hashlib
import json

import pytest

from data_pipeline import BaseVariant, DataManifest, ImageShape
from data_pipeline.dataset import CLASSES, DataError

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
