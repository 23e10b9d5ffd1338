"""``fersearch data describe`` writes only under the folder it is given (or ``--out``), never by walking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.dataset import CLASSES, SPLITS, DataError
from data_pipeline.describe import PLOT_FILE, describe
from search.cli import main


def fake_dataset(root: Path, variant: str) -> Path:
    """A prepared dataset as describe sees it: only its manifest (describe reads nothing else)."""
    root.mkdir(parents=True)
    counts = {s: {c: 10 + i for i, c in enumerate(CLASSES)} for s in SPLITS}
    manifest = {
        "variant": variant,
        "format": "fer2013",
        "classes": list(CLASSES),
        "counts": counts,
        "rows_in": 300,
        "rows_written": 300,
        "rows_quarantined": 0,
        "quarantine_kinds": {},
        "class_weights": dict.fromkeys(CLASSES, 1.0),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def pngs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


def test_parent_folder_is_not_walked(tmp_path):
    """Pointed at a folder that merely contains prepared datasets deeper down: an error, no PNG anywhere."""
    fake_dataset(tmp_path / "search-1" / "data", "original")
    fake_dataset(tmp_path / "project" / "prep" / "balanced", "balanced")
    with pytest.raises(DataError, match="no manifest.json here"):
        describe(tmp_path)
    assert pngs(tmp_path) == []


def test_prepare_root_plots_into_its_variants(tmp_path, capsys):
    root = tmp_path / "prep"
    fake_dataset(root / "original", "original")
    fake_dataset(root / "balanced", "balanced")
    fake_dataset(root / "one-vs-rest" / "Happy", "one-vs-rest")
    fake_dataset(root / "misc" / "original", "original")  # not a place prepare writes: left alone
    assert main(["data", "describe", str(root)]) == 0
    assert capsys.readouterr().out.count("plot: ") == 3
    assert pngs(tmp_path) == sorted(
        root / d / PLOT_FILE for d in ("original", "balanced", "one-vs-rest/Happy")
    )


def test_out_keeps_datasets_untouched(tmp_path, capsys):
    data = fake_dataset(tmp_path / "prep" / "original", "original")
    out = tmp_path / "plots"
    assert main(["data", "describe", str(data.parent), "--out", str(out)]) == 0
    assert f"plot: {out / 'original' / PLOT_FILE}" in capsys.readouterr().out
    assert pngs(tmp_path) == [out / "original" / PLOT_FILE]
    assert main(["data", "describe", str(data), "--out", str(out / "single")]) == 0
    assert (out / "single" / PLOT_FILE).is_file() and pngs(data) == []
