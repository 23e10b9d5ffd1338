"""``fersearch distill`` on the session's demo run (real Ray search, real export, synthetic faces): the
student is an ordinary export that ``predict`` loads, its manifest names its teacher, PublicTest alone
chose it, and bad input is one line."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline.dataset import load_split
from search.cli import main
from search.serving import DistillOptions, ExportManifest, Predictor, distill, predict_paths
from search.serving.distill import tempered


def test_tempered_targets_soften_and_keep_the_order():
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    t1, t4 = tempered(p, 1.0), tempered(p, 4.0)
    np.testing.assert_allclose(t1, p, atol=1e-6)
    assert np.argsort(t4[0]).tolist() == np.argsort(p[0]).tolist() and t4[0].max() < p[0].max()
    np.testing.assert_allclose(t4.sum(1), 1, atol=1e-6)


def test_student_of_a_run_exports_loads_in_predict_and_names_its_teacher(demo_run, tmp_path):
    assert demo_run.code == 0
    out = tmp_path / "student"
    result = distill(demo_run.dir, DistillOptions(budget_s=15, temperatures=(1.0, 3.0), threads=2), out=out)
    manifest = ExportManifest.read(out)
    teacher = hashlib.sha256((demo_run.dir / "export" / "manifest.json").read_bytes()).hexdigest()
    assert manifest.distilled and manifest.teacher == teacher
    assert len(manifest.members) == 1 and not manifest.tta_flip and manifest.members[0].arch == result.arch
    assert [r["temperature"] for r in result.tried] == [1.0, 3.0] and result.epoch >= 0
    # the default student has the best member's net and starts from its weights (epoch 0: the member)
    best = ExportManifest.read(demo_run.dir / "export").best_member()
    assert manifest.metrics["distill"]["warm_start"] == best.file and result.arch == best.arch
    assert result.public_acc == max(r["public_acc"] for r in result.tried)
    # the exported student scores PublicTest as the chosen epoch did (ONNX against torch: same argmax)
    x, y = load_split(demo_run.dir / "data", "PublicTest")
    student = Predictor.from_dir(out)
    assert abs(float(np.mean(student.predict_proba(x).argmax(1) == y)) - result.public_acc) <= 0.01
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), x[0])
    (record,) = predict_paths(student, [face])
    assert record.status == "ok" and record.label in manifest.classes


def test_a_student_from_scratch_trains_at_least_one_epoch(demo_run, tmp_path):
    options = DistillOptions(budget_s=3, temperatures=(2.0,), threads=2, warm_start=False)
    result = distill(demo_run.dir, options, out=tmp_path / "scratch")
    assert result.epoch >= 1
    assert ExportManifest.read(result.export_dir).metrics["distill"]["warm_start"] is None


def test_distill_reads_no_privatetest():
    source = (Path(__file__).parents[1] / "search" / "serving" / "distill.py").read_text()
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)}
    assert not any(isinstance(s, str) and "PrivateTest" in s for s in strings)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--arch", "no_such_net"], "--arch 'no_such_net' is not a registered model"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--temperature", "warm"], "--temperature must be numbers"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(demo_run, capsys, argv, words):
    assert main(["distill", str(demo_run.dir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fersearch: error:") and words in err[0], err


def test_a_directory_without_an_export_is_one_line(tmp_path, capsys):
    assert main(["distill", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither an export nor a run directory" in err[0], err


def test_a_run_with_distill_adds_the_students_row_latency_and_export(demo_run, tmp_path):
    """``fersearch run --distill``'s last stage, on a copy of the demo run: the student is exported beside
    the ensemble, its row (with its latency) joins comparison.txt, summary and the report's
    accuracy-against-latency figure, and a deadline bounds its training."""
    import json
    import shutil
    import time

    from search.ensemble import STUDENT
    from search.pipeline import select_and_export
    from search.spec import DistillConfig, MergeConfig

    root = tmp_path / "run"
    shutil.copytree(demo_run.dir, root, ignore=shutil.ignore_patterns("wandb", "export", "report", "logs"))
    deadline = time.time() + 60
    result = select_and_export(
        root, top_k=3, merge=MergeConfig(bases=0), student=DistillConfig(enabled=True, temperatures=(2.0,)),
        deadline=deadline,
    )  # fmt: skip
    assert time.time() <= deadline + 10
    (row,) = [r for r in result.rows if r.strategy == STUDENT]
    exported = next(r for r in result.rows if (r.strategy, r.tta) == (result.chosen.name, result.chosen.tta))
    assert result.student == root / "student" and ExportManifest.read(result.student).distilled
    assert row.members[0].startswith("student-T2@") and not row.tta and 0 < row.ms_per_1000
    if len(exported.members) > 1 or exported.tta:  # fewer forward passes per face than the ensemble
        assert row.ms_per_1000 < exported.ms_per_1000
    budget = ExportManifest.read(result.student).metrics["distill"]["budget_s"]
    assert budget <= 60, budget
    assert STUDENT in (root / "comparison.txt").read_text()
    page = result.report.read_text()
    assert "accuracy_vs_latency.png" in page and STUDENT in page
    assert (result.report.parent / "accuracy_vs_latency.png").stat().st_size > 5000
    meta = json.loads((result.student / "manifest.json").read_text())
    assert meta["distilled"] is True


def test_a_bad_student_arch_stops_the_run_before_its_search(tmp_path):
    from search.pipeline import run
    from search.spec import SpecError, demo_config

    cfg = demo_config().replace(distill={"enabled": True, "arch": "no_such_net"})
    with pytest.raises(SpecError, match="distill.arch: 'no_such_net' is not a registered model"):
        run(tmp_path / "faces.csv", tmp_path / "out", cfg)
    assert not (tmp_path / "out" / "tune").exists()
