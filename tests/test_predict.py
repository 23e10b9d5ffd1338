"""``fersearch predict`` on raw photos, videos, 48×48 faces and CSVs: real OpenCV Haar cascades, real CK+
faces pasted on a canvas, a tiny untrained export (the boxes and plumbing are checked, not accuracy)."""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile

import cv2
import numpy as np
import pytest

from data_pipeline import preprocess as pp
from search.cli import main
from search.serving import NO_FACE, face_box_crop, load_gray, predict_paths, preprocess_config
from search.serving.predict import square_crop
from tests.conftest import SHARED_DATA

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
CKPLUS = SHARED_DATA / "ckplus.tar"
FACES = ("CK+48/happy/S010_006_00000015.png", "CK+48/surprise/S010_002_00000012.png")
SIDE, TOP, LEFTS = 110, 65, (20, 180)  # where the two upscaled faces are pasted on a 320×240 canvas


@pytest.fixture(scope="module")
def ck_faces() -> list[np.ndarray]:
    if not CKPLUS.is_file():
        pytest.skip(f"{CKPLUS} not found (real CK+ images)")
    with tarfile.open(CKPLUS) as tar:
        return [cv2.imdecode(np.frombuffer(tar.extractfile(n).read(), np.uint8), 0) for n in FACES]


def canvas(faces: list[np.ndarray], shift: int = 0) -> np.ndarray:
    """A 320×240 'photo': flat background with the faces upscaled to 110 px side by side."""
    img = np.full((240, 320), 128, np.uint8)
    for face, left in zip(faces, LEFTS, strict=True):
        x = left + shift
        img[TOP : TOP + SIDE, x : x + SIDE] = cv2.resize(face, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    return img


def assert_boxes_near_pasted(boxes: list[list[int]], shift: int = 0) -> None:
    """Each box centred on its pasted face, about its size (YuNet's box is narrower than Haar's square)."""
    assert len(boxes) == 2
    for (x, y, w, h), left in zip(sorted(boxes), LEFTS, strict=True):
        cx, cy = x + w / 2 - (left + shift + SIDE / 2), y + h / 2 - (TOP + SIDE / 2)
        assert abs(cx) <= 12 and abs(cy) <= 12, (x, y, w, h, left + shift)
        assert 0.7 * SIDE <= w <= 1.2 * SIDE and 0.8 * SIDE <= h <= 1.2 * SIDE, (w, h)


@pytest.fixture(scope="module")
def clip(ck_faces, tmp_path_factory):
    """10 frames at 10 fps, MJPG: the two faces drifting right by 1 px per frame."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for i in range(10):
        writer.write(cv2.cvtColor(canvas(ck_faces, shift=i), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_detect_faces_finds_every_face_and_keeps_detect_face(ck_faces):
    photo = canvas(ck_faces)
    boxes = pp.detect_faces(photo)
    assert_boxes_near_pasted([list(b) for b in boxes])
    assert boxes[0] == pp.detect_face(photo)
    rois = pp.face_rois(photo)
    assert_boxes_near_pasted([list(f.box) for f in rois])
    assert [f.box[0] for f in rois] == sorted(f.box[0] for f in rois)  # reading order
    for f in rois:
        assert f.flags & pp.FACE and f.crop.shape == (f.roi[3], f.roi[2])
        x, y, w, h = f.box
        assert x - 0.1 * w <= f.roi[0] and f.roi[0] + f.roi[2] <= x + 1.1 * w  # crop inside its face
    noise = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    assert pp.detect_faces(noise) == [] and pp.face_rois(noise) == []


def test_photo_gives_one_result_per_face_with_its_box(served, ck_faces, tmp_path):
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), cv2.cvtColor(canvas(ck_faces), cv2.COLOR_GRAY2BGR))
    results = list(predict_paths(served, [photo], detector="haar"))
    assert [r.input for r in results] == [str(photo)] * 2
    assert all(r.status == "ok" and r.label in CLASSES for r in results)
    assert_boxes_near_pasted([list(r.box) for r in results])
    for r in results:
        assert r.roi is not None and abs(sum(r.probabilities.values()) - 1) < 1e-4
    # the classified image is the face box with FER2013's margin (this export records no crop: face-box)
    gray = canvas(ck_faces)
    cfg = preprocess_config(None)
    boxes = sorted(pp.detect_faces(gray))
    expected = served.predict_proba(np.stack([pp.finish(face_box_crop(gray, b)[0], cfg) for b in boxes]))
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # asked for, the eyes-to-mouth ROI of the data pipeline
    roi = list(predict_paths(served, [photo], crop="eyes-mouth"))
    expected = served.predict_proba(np.stack([pp.finish(f.crop, cfg) for f in pp.face_rois(gray)]))
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in roi])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    whole = list(predict_paths(served, [photo], roi=False))
    assert len(whole) == 1 and whole[0].box == (0, 0, 320, 240) and whole[0].roi is None


def test_yunet_finds_each_face_by_its_landmarks_and_crops_fer2013s_square(served, ck_faces, tmp_path):
    if pp.default_detector() == "haar":
        pytest.skip("yuface (YuNet) is not installed here")
    gray = canvas(ck_faces)
    faces = sorted(pp.find_faces(gray, "yunet"), key=lambda f: f.box)
    assert len(faces) == 2 and all(f.detector == "yunet" for f in faces)
    for f, left in zip(faces, LEFTS, strict=True):
        x, y, side, _ = f.square  # FER2013's square about the landmarks lies on the pasted face's square
        assert max(abs(x - left), abs(y - TOP), abs(side - SIDE)) <= 0.12 * SIDE, (f.square, left)
        (rx, ry), (lx, ly), nose, right_mouth, left_mouth = f.landmarks
        assert rx < nose[0] < lx and max(ry, ly) < nose[1] < min(right_mouth[1], left_mouth[1])
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), gray)
    results = list(predict_paths(served, [photo], detector="yunet"))
    assert [r.box for r in results] == [f.box for f in faces]
    cfg = preprocess_config(None)
    expected = served.predict_proba(np.stack([pp.finish(square_crop(gray, f.square)[0], cfg) for f in faces]))
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    noise = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    assert pp.find_faces(noise, "yunet") == []


def test_small_faces_and_csv_rows_go_straight_through(served, ck_faces, tmp_path):
    face = tmp_path / "face48.png"
    cv2.imwrite(str(face), ck_faces[0])
    rows = tmp_path / "rows.csv"
    rows.write_text(
        f"emotion,pixels,Usage\n0,{' '.join(map(str, ck_faces[1].ravel()))},PrivateTest\n0,1 2,x\n"
    )
    results = list(predict_paths(served, [face, rows]))
    assert [(r.input.rsplit("/", 1)[-1], r.status) for r in results] == [
        ("face48.png", "ok"),
        ("rows.csv:row 0", "ok"),
        ("rows.csv:row 1", "error"),
    ]
    assert results[0].box == (0, 0, 48, 48) and results[0].roi is None
    assert "rows.csv:row 1: pixels must be 2304 integers" in results[2].error
    expected = served.predict_proba(np.stack(ck_faces))
    got = np.array([[r.probabilities[c] for c in CLASSES] for r in results[:2]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_no_face_is_a_record_not_a_silent_drop(served, tmp_path):
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(2).integers(0, 256, (200, 200), dtype=np.uint8))
    (r,) = predict_paths(served, [noise])
    assert r.status == "no_face" and r.error == NO_FACE and r.label is None and r.box is None
    assert "no face found" in r.to_json()["error"]


def test_jpeg_exif_orientation_is_honoured(tmp_path):
    img = np.zeros((60, 100), np.uint8)
    img[:10] = 255  # a bright top band
    data = cv2.imencode(".jpg", img)[1].tobytes()
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"  # rotate 90° CW
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\0\0" + tiff
    path = tmp_path / "phone.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    upright = load_gray(path)
    assert upright.shape == (100, 60) and upright[:, -10:].mean() > 200 and upright[:, :40].mean() < 30
    assert pp.decode_image(path.read_bytes())[0].shape == (60, 100)  # the data pipeline's plain decode


def test_video_frames_are_sampled_named_and_timed(served, clip):
    results = list(predict_paths(served, [clip], every=3, detector="haar"))
    frames = [r.frame for r in results]
    assert frames == [0, 0, 3, 3, 6, 6, 9, 9]
    assert [r.input for r in results[::2]] == [f"{clip}#frame={i}" for i in (0, 3, 6, 9)]
    assert [r.time for r in results[::2]] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    for i in range(0, 8, 2):
        assert_boxes_near_pasted([list(r.box) for r in results[i : i + 2]], shift=results[i].frame)
    default = list(predict_paths(served, [clip]))  # one frame per second at 10 fps: frame 0 only
    assert [r.frame for r in default] == [0, 0]


def test_preprocessing_recorded_in_the_manifest_is_honoured():
    assert preprocess_config(None).roi == "auto"
    assert preprocess_config({"face_roi": None}).roi == "auto"
    rec = {"roi": "face", "roi_margin": 0.2, "equalize": "hist", "size": 48}
    cfg = preprocess_config(rec)
    assert (cfg.roi, cfg.roi_margin, cfg.equalize) == ("face", 0.2, "hist")
    assert preprocess_config({"face_roi": False}).roi == "none"
    assert preprocess_config({"face_roi": {"mode": "face", "margin": 0.3}}).roi_margin == 0.3
    assert preprocess_config(rec, roi=False).roi == "none"
    assert preprocess_config(rec, roi="auto").roi == "auto"


def test_cli_jsonl_csv_errors_and_exit_codes(served_dir, ck_faces, clip, tmp_path, capsys):
    photo = tmp_path / "two.jpg"
    cv2.imwrite(str(photo), canvas(ck_faces))
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(3).integers(0, 256, (160, 160), dtype=np.uint8))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")

    code = main(["predict", str(served_dir), str(photo), str(noise), str(clip), "--every", "5"])
    out = capsys.readouterr()
    records = [json.loads(line) for line in out.out.splitlines()]
    assert code == 0
    assert [r["input"].rsplit("/", 1)[-1] for r in records] == [
        "two.jpg",
        "two.jpg",
        "noise.png",
        "clip.avi#frame=0",
        "clip.avi#frame=0",
        "clip.avi#frame=5",
        "clip.avi#frame=5",
    ]
    assert_boxes_near_pasted([r["box"] for r in records[:2]])
    assert records[2]["class"] is None and "no face found" in records[2]["error"]
    assert records[5]["frame"] == 5 and records[5]["time"] == pytest.approx(0.5)
    assert "frame" not in records[0] and set(records[0]["probabilities"]) == set(CLASSES)

    table = tmp_path / "out.csv"
    code = main(["predict", str(served_dir), str(photo), str(broken), "--format", "csv", "--out", str(table)])
    err = capsys.readouterr().err
    assert code == 1 and "broken.mp4: not a readable video" in err
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert list(rows[0])[:8] == ["input", "frame", "time", "x", "y", "w", "h", "class"]
    assert list(rows[0])[-2:] == ["status", "error"]
    assert_boxes_near_pasted([[int(r[k]) for k in "xywh"] for r in rows[:2]])
    assert len(rows) == 3 and rows[0]["frame"] == "" and rows[0]["class"] in CLASSES
    assert rows[2]["status"] == "error" and "broken.mp4: not a readable video" in rows[2]["error"]

    assert main(["predict", str(served_dir), str(noise)]) == 1  # nothing classified
    capsys.readouterr()
    assert main(["predict", str(served_dir), str(noise), "--no-roi"]) == 0
    (whole,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert whole["box"] == [0, 0, 160, 160] and whole["roi"] is None and whole["class"] in CLASSES
