"""``fersearch data prepare|describe`` through the real entry point."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from data_pipeline import synth
from data_pipeline.dataset import CLASSES
from search.cli import main


def test_prepare_balanced_then_describe(tmp_path, ray_local, capsys):
    csv_path = synth.write_fer2013_csv(tmp_path / "fer.csv.gz", n_rows=300, seed=2)
    out = tmp_path / "data"
    args = ["--source", "fer2013", "--path", str(csv_path), "--out", str(out), "--variant", "balanced"]
    assert main(["data", "prepare", *args, "--per-class", "40", "--equalize", "clahe"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.splitlines()[0])
    assert summary["variant"] == "balanced" and summary["rows_in"] == 300
    assert f"→ {out / 'balanced'}" in printed
    m = json.loads((out / "balanced" / "manifest.json").read_text())
    assert m["counts"]["Training"] == dict.fromkeys(CLASSES, 40)
    assert m["preprocess"]["equalize"] == "clahe"

    assert main(["data", "describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("plot: ") == 2
    assert "Training before" in text and "class weights" in text
    for variant in ("original", "balanced"):
        png = out / variant / "class_distribution.png"
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300
            assert np.asarray(im.convert("L")).std() > 5


def test_one_vs_rest_for_every_class_and_errors(tmp_path, ray_local, capsys):
    csv_path = synth.write_fer2013_csv(tmp_path / "fer.csv", n_rows=300, seed=2)
    out = tmp_path / "data"
    args = ["data", "prepare", "--path", str(csv_path), "--out", str(out), "--variant", "one-vs-rest"]
    assert main([*args, "--ovr-base", "original", "--ovr-size", "20"]) == 0
    assert sorted(p.name for p in (out / "one-vs-rest").iterdir()) == sorted(CLASSES)
    capsys.readouterr()
    assert main([*args, "--ovr-base", "original", "--positive", "joy"]) == 2
    assert "--positive, one of Angry" in capsys.readouterr().err
    assert main(["data", "prepare", "--path", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["data", "describe", str(tmp_path / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
