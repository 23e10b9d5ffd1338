"""``fersearch predict`` accounts for every input: what it cannot classify (unsupported type, unreadable,
too small to hold a face, truncated video) is a record with ``status`` and ``error`` in the output and a
line on stderr; a summary line counts each status; ``--strict`` makes any of them exit 1. ``data prepare``
counts the same files in ``rows_in``."""

from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from data_pipeline import synth
from data_pipeline.config import PrepareConfig, SourceConfig
from data_pipeline.prepare import prepare
from search.cli import main
from search.serving import MIN_SIDE, predict_paths

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def face(seed: int) -> np.ndarray:
    return synth.draw_face(seed % 7, np.random.default_rng(seed))


@pytest.fixture()
def folder(tmp_path):
    """Every kind of file a user's folder holds: faces as .png, .gif and without an extension, a .txt,
    a hidden file, a 1×1 image and a damaged .png."""
    d = tmp_path / "inbox"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), face(1))
    Image.fromarray(face(2)).save(d / "b.gif")
    cv2.imwrite(str(d / "c.png"), face(3))
    (d / "c.png").rename(d / "c")  # an image that lost its extension
    (d / "notes.txt").write_text("not a picture")
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    cv2.imwrite(str(d / "dot.png"), np.zeros((1, 1), np.uint8))
    (d / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return d


def by_name(results) -> dict[str, object]:
    return {r.input.rsplit("/", 1)[-1]: r for r in results}


def test_every_file_of_a_folder_is_accounted_for(served, folder):
    got = by_name(predict_paths(served, [folder]))
    assert set(got) == {"a.png", "b.gif", "c", "notes.txt", ".DS_Store", "dot.png", "damaged.png"}
    assert {n: r.status for n, r in got.items()} == {
        "a.png": "ok",
        "b.gif": "ok",
        "c": "ok",
        "notes.txt": "skipped",
        ".DS_Store": "skipped",
        "dot.png": "error",
        "damaged.png": "error",
    }
    assert got["b.gif"].label in CLASSES and got["c"].box == (0, 0, 48, 48)
    assert "notes.txt: not an image, video or CSV (.txt, no image format)" in got["notes.txt"].error
    assert "hidden file" in got[".DS_Store"].error
    assert (
        f"dot.png: image is 1×1 px, too small to hold a face (needs at least {MIN_SIDE} px"
        in got["dot.png"].error
    )
    assert "damaged.png: not a readable image" in got["damaged.png"].error
    assert got["dot.png"].label is None and got["dot.png"].probabilities is None


@pytest.fixture()
def truncated_video(tmp_path):
    """30 frames in the AVI header, only the first part of the file left."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 128))
    assert writer.isOpened()
    for i in range(30):
        frame = cv2.resize(face(i), (128, 128), interpolation=cv2.INTER_CUBIC)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    cut = tmp_path / "cut.avi"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return path, cut


def test_truncated_video_ends_with_an_error_record(served, truncated_video):
    whole, cut = truncated_video
    assert all(r.status != "error" for r in predict_paths(served, [whole], every=5, roi="none"))
    results = list(predict_paths(served, [cut], every=5, roi="none"))
    *frames, last = results
    assert frames and all(r.status == "ok" for r in frames) and len(frames) < 6
    assert last.status == "error" and last.input == str(cut)
    assert "truncated video: its header announces 30 frames, only" in last.error


def test_cli_writes_every_record_counts_them_and_strict_fails(served_dir, folder, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code = main(["predict", str(served_dir), str(folder), str(tmp_path / "nope.png"), "--out", str(out)])
    err = capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 1  # an error (unreadable, too small, missing): exit 1 as before
    assert len(records) == 8 and all("status" in r for r in records)
    failed = {r["input"].rsplit("/", 1)[-1]: r for r in records if r["status"] != "ok"}
    assert set(failed) == {"notes.txt", ".DS_Store", "dot.png", "damaged.png", "nope.png"}
    for name, r in failed.items():
        assert r["class"] is None and r["error"]
        assert f"{r['status']}: {r['error']}" in err, name
    assert "fersearch predict: 8 records: 3 ok, 0 no face, 3 error, 2 skipped" in err
    assert "Traceback" not in err

    table = tmp_path / "out.csv"
    assert main(["predict", str(served_dir), str(folder), "--format", "csv", "--out", str(table)]) == 1
    capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [r["status"] for r in rows].count("skipped") == 2 and len(rows) == 7
    assert next(r for r in rows if r["input"].endswith("notes.txt"))["error"].endswith("no image format)")

    good = tmp_path / "good"
    good.mkdir()
    cv2.imwrite(str(good / "a.png"), face(1))
    (good / "README.txt").write_text("faces")
    assert main(["predict", str(served_dir), str(good)]) == 0  # a skipped file alone is not an error
    assert "1 ok, 0 no face, 0 error, 1 skipped" in capsys.readouterr().err
    assert main(["predict", str(served_dir), str(good), "--strict"]) == 1
    noise = good / "noise.png"
    (good / "README.txt").unlink()
    cv2.imwrite(str(noise), np.random.default_rng(3).integers(0, 256, (160, 160), dtype=np.uint8))
    capsys.readouterr()
    assert main(["predict", str(served_dir), str(good)]) == 0
    assert "1 ok, 1 no face, 0 error, 0 skipped" in capsys.readouterr().err
    assert main(["predict", str(served_dir), str(good), "--strict"]) == 1
    assert main(["predict", str(served_dir), str(good / "a.png"), "--strict"]) == 0


def test_prepare_counts_every_file_of_a_folder(tmp_path, ray_local):
    root = tmp_path / "faces"
    for k, cls in enumerate(["happy", "sad", "angry"] * 4):
        (root / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / cls / f"{k}.png"), face(k))
    Image.fromarray(face(20)).save(root / "happy" / "x.gif")
    cv2.imwrite(str(root / "sad" / "y.png"), face(21))
    (root / "sad" / "y.png").rename(root / "sad" / "y")
    (root / "happy" / "notes.txt").write_text("no face here")
    (root / "sad" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    m = prepare(PrepareConfig(SourceConfig("folder", root)), tmp_path / "out").manifest
    assert m.rows_in == 16 and m.rows_written == 14 and m.rows_quarantined == 2
    assert m.rows_written + m.rows_quarantined == m.rows_in
    assert m.quarantine_kinds == {"skipped": 2}
    with open(tmp_path / "out" / "original" / "quarantine.csv", newline="") as f:
        q = {r["origin"]: r for r in csv.DictReader(f)}
    assert set(q) == {"happy/notes.txt", "sad/.DS_Store"}
    assert "not an image file (.txt" in q["happy/notes.txt"]["reason"]
    assert q["sad/.DS_Store"]["reason"] == "hidden file, not read"
