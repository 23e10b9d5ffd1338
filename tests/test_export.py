from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from search.cli import main
from search.ensemble import Candidate, WeightedEnsemble
from search.serving import ExportError, Predictor, export_ensemble
from search.trial import WEIGHTS_FILE, TrialCheckpoint, TrialState, build_model, predict_proba

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


@pytest.fixture()
def exported(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 48, 48), dtype=np.uint8)
    members, models = [], []
    for i, arch in enumerate(("mini_xception", "vgg_fer11")):
        torch.manual_seed(i)
        model = build_model(arch, 7, 0.0)
        d = tmp_path / f"ckpt{i}"
        d.mkdir()
        probs = predict_proba(model, images)
        config = {"arch": arch, "lr": 1e-3, "dropout": 0.0}
        TrialCheckpoint(d).save(model, config, {"epoch": 1}, TrialState(1, 0.5, 1), (probs, probs, np.eye(7)))
        members.append(Candidate(f"t{i}", arch, {}, d, 0.5))
        models.append(model)
    out = export_ensemble(
        members, WeightedEnsemble({0: 0.75, 1: 0.25}), tmp_path / "export", classes=CLASSES, metrics={"x": 1}
    )
    expected = 0.75 * predict_proba(models[0], images) + 0.25 * predict_proba(models[1], images)
    return out, images, expected


def test_export_roundtrip_matches_weighted_average(exported):
    out, images, expected = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["arch"] for m in manifest["members"]] == ["mini_xception", "vgg_fer11"]
    assert set(manifest["files"]) == {"member_0.safetensors", "member_1.safetensors", "model.onnx"}
    assert manifest["versions"]["torch"].startswith("2.13.0")
    for backend in ("torch", "onnx"):
        predictor = Predictor.from_dir(out, backend=backend)
        got = predictor.predict_proba(images)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_onnx_graph_and_torch_members_agree(exported):
    out, _, _ = exported
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(64, 48, 48), dtype=np.uint8)
    via_onnx = Predictor.from_dir(out, backend="onnx").predict_proba(images)
    via_torch = Predictor.from_dir(out, backend="torch").predict_proba(images)
    assert Predictor.from_dir(out).backend == "onnx"
    assert np.abs(via_onnx - via_torch).max() <= 1e-4


def test_pickle_weights_are_refused(exported, tmp_path):
    out, _, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    model = build_model("mini_xception", 7, 0.0)
    with open(out / "member_0.pt", "wb") as f:
        pickle.dump(model.state_dict(), f)
    manifest["members"][0]["file"] = "member_0.pt"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"member_0\.pt: refusing to load \.pt"):
        Predictor.from_dir(out)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.pt").write_bytes((out / "member_0.pt").read_bytes())
    with pytest.raises(ExportError, match=r"model\.pt: pickle files are never loaded"):
        Predictor.from_dir(bare)


def test_pickle_disguised_as_safetensors_is_refused(exported):
    out, _, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "member_1.safetensors").write_bytes(pickle.dumps({"w": 1}))
    manifest["files"].pop("member_1.safetensors")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"member_1\.safetensors: not a valid safetensors file"):
        Predictor.from_dir(out)


def test_tampered_weights_fail_the_checksum(exported):
    out, _, _ = exported
    data = bytearray((out / "member_0.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "member_0.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        Predictor.from_dir(out)


def test_predict_cli_on_images_and_csv(exported, tmp_path, capsys):
    out, images, expected = exported
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.png"), images[0])
    big = cv2.resize(images[1], (96, 96), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(img_dir / "b.png"), big)
    (img_dir / "broken.png").write_bytes(b"not an image")
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(
        "emotion,pixels,Usage\n"
        + "".join(f"0,{' '.join(map(str, im.ravel()))},PrivateTest\n" for im in images[:3])
    )
    code = main(["predict", str(out), str(img_dir), str(csv_path)])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1
    assert "broken.png: not a readable image" in captured.err
    assert [r["input"].rsplit("/", 1)[-1] for r in records] == [
        "a.png",
        "b.png",
        "broken.png",  # its error record: every input is accounted for
        "rows.csv:row 0",
        "rows.csv:row 1",
        "rows.csv:row 2",
    ]
    assert records[2]["status"] == "error" and records[2]["probabilities"] is None
    records = records[:2] + records[3:]
    probs = np.array([[r["probabilities"][c] for c in CLASSES] for r in records])
    np.testing.assert_allclose(probs[0], expected[0], atol=1e-4)
    np.testing.assert_allclose(probs[2:], expected[:3], atol=1e-4)
    assert records[0]["class"] == CLASSES[int(expected[0].argmax())]


def test_weights_file_is_plain_safetensors(exported):
    out, _, _ = exported
    assert (out / "member_0.safetensors").read_bytes()[8:9] == b"{"
    assert WEIGHTS_FILE.endswith(".safetensors")
