"""An export logged as a W&B artifact, checked from the offline run's log on disk (real wandb, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from search.serving import ExportError, ExportManifest, ExportMember, log_export_artifact
from search.tracking import read_offline_artifacts, read_offline_run

MEMBERS = [
    {"file": "member_0.safetensors", "trial_id": "t0", "arch": "cnn5", "arch_kwargs": {}, "weight": 0.75,
     "val_acc": 0.61},
    {"file": "member_1.safetensors", "trial_id": "t3", "arch": "mini_xception", "arch_kwargs": {"width": 0.5},
     "weight": 0.25, "val_acc": 0.58},
]  # fmt: skip


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Offline wandb with its staging, cache and config under tmp_path."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "cfg")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    return tmp_path


def _fake_export(root: Path, report: bool) -> Path:
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"onnx" * 100)
    for i, m in enumerate(MEMBERS):
        (root / m["file"]).write_bytes(bytes([i]) * (200 + i))
    ExportManifest(
        classes=("angry", "happy"),
        members=tuple(ExportMember(**m) for m in MEMBERS),
        metrics={"PublicTest": {"acc": 0.64}, "PrivateTest": {"acc": 0.63, "macro_f1": 0.6}},
        files={f.name: "0" * 64 for f in root.iterdir()},  # read, not verified: the hashes are not checked
    ).write(root)
    if report:
        (root / "report").mkdir()
        (root / "report" / "report.html").write_text("<html><img src='weights.png'></html>")
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / "report" / "weights.png")
    return root


def test_export_is_logged_as_a_model_artifact_with_its_report(offline):
    export = _fake_export(offline / "runs" / "quick" / "export", report=True)
    run_dir = Path(log_export_artifact(export, project="fersearch", dir=offline / "wb"))

    assert run_dir.name.startswith("offline-run-") and run_dir.is_relative_to(offline / "wb")
    artifacts = {a["name"]: a for a in read_offline_artifacts(run_dir)}
    assert set(artifacts) == {"fersearch-quick", "fersearch-quick-report"}
    model = artifacts["fersearch-quick"]
    assert model["type"] == "model" and "latest" in model["aliases"]
    assert model["files"] == {
        "manifest.json": (export / "manifest.json").stat().st_size,
        "member_0.safetensors": 200,
        "member_1.safetensors": 201,
        "model.onnx": 400,
    }  # the report folder is not part of the model
    meta = model["metadata"]
    assert meta["classes"] == ["angry", "happy"] and meta["n_members"] == 2
    assert [(m["arch"], m["weight"]) for m in meta["members"]] == [("cnn5", 0.75), ("mini_xception", 0.25)]
    assert meta["metrics"]["PublicTest"]["acc"] == 0.64

    report = artifacts["fersearch-quick-report"]
    assert report["type"] == "report"
    assert set(report["files"]) == {"report/report.html", "report/weights.png"}

    history, summary = read_offline_run(run_dir)
    (image,) = [row for row in history if row.get("report/weights/_type") == "image-file"]
    assert (run_dir / "files" / image["report/weights/path"]).is_file()
    assert summary["public_acc"] == 0.64 and summary["members"] == 2


def test_export_without_report_logs_one_artifact_next_to_the_search(offline):
    export = _fake_export(offline / "runs" / "ens-v2", report=False)
    run_dir = Path(log_export_artifact(export, project="fer search", run_name="my-export"))

    assert run_dir.is_relative_to(offline / "runs" / "wandb")  # default dir: beside the export
    (artifact,) = read_offline_artifacts(run_dir)
    assert artifact["name"] == "fer-search-ens-v2" and artifact["type"] == "model"
    assert set(artifact["files"]) == {"manifest.json", "member_0.safetensors", "member_1.safetensors",
                                      "model.onnx"}  # fmt: skip


def test_not_an_export_is_refused_before_any_run(offline):
    (offline / "empty").mkdir()
    with pytest.raises(ExportError, match="manifest.json: missing"):
        log_export_artifact(offline / "empty", project="fersearch", dir=offline / "wb")
    assert not (offline / "wb").exists()
