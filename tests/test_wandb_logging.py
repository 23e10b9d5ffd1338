"""W&B logging of a search (real wandb, offline): one group per search, constants in the run config,
the comparison as a table, the report as HTML, one sync command, no traceback at exit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from search.serving import ExportManifest, ExportMember, log_export_artifact
from search.tracking import inline_images, read_offline_meta, read_offline_run, sync_command
from tests.conftest import driver_env

ROOT = Path(__file__).resolve().parents[1]

# A two-trial Tune search with the project's callback, then the summary run, in a driver process of its
# own: the exit of that process is where Ray's callback printed its ``__del__`` traceback.
DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import ray
    from ray import tune

    from search.spec import SearchConfig
    from search.tracking import log_summary, wandb_callback

    out = Path(sys.argv[1])
    cfg = SearchConfig(name="demo", wandb="offline")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")


    def trainable(config):
        for epoch in range(1, 4):
            tune.report({"epoch": epoch, "val_acc": 0.2 * epoch + config["lr"], "params": 1234,
                         "train_images": 500})


    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search([0.01, 0.02]), "batch_size": 64, "dropout": 0.25},
        run_config=tune.RunConfig(storage_path=str(out), name="tune", callbacks=[wandb_callback(cfg, out)],
                                  verbose=0),
    )
    tuner.fit()
    log_summary(cfg, out, [{"trial_id": "t", "val_acc": 0.62}], {})
    print("search finished")
    """
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Offline wandb with its staging, cache and config under tmp_path."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "cfg")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    return tmp_path


def test_search_runs_group_config_sync_hint_and_clean_exit(offline):
    out = offline / "demo-20260101-120000"
    out.mkdir()
    script = offline / "driver.py"
    script.write_text(DRIVER)
    env = {**driver_env(), "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_SILENT", None)  # the per-run hints must be silenced by the code, not by the caller
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "search finished" in done.stdout
    for stream in (done.stdout, done.stderr):
        assert "Traceback" not in stream and "Exception ignored" not in stream, stream[-3000:]
    hints = [ln for ln in (done.stdout + done.stderr).splitlines() if "wandb sync" in ln]
    assert hints == [f"W&B runs are offline; upload them all with: {sync_command(out / 'wandb')}"]

    runs = sorted((out / "wandb" / "wandb").glob("offline-run-*"))
    metas = [read_offline_meta(r) for r in runs]
    assert len(runs) == 3 and {m["group"] for m in metas} == {out.name}
    trials = [(r, m) for r, m in zip(runs, metas, strict=True) if m["job_type"] != "summary"]
    assert len(trials) == 2
    for run_dir, meta in trials:
        history, _ = read_offline_run(run_dir)
        logged = {k for row in history for k in row}
        assert "val_acc" in logged and len(history) == 3
        assert not logged & {"params", "train_images"} and not any(k.startswith("config/") for k in logged)
        cfg = meta["config"]
        assert cfg["params"] == 1234 and cfg["train_images"] == 500
        assert cfg["batch_size"] == 64 and cfg["dropout"] == 0.25


def test_export_run_logs_comparison_table_and_html_report(offline, capsys):
    search = offline / "demo-20260101-120000"
    export = search / "export"
    export.mkdir(parents=True)
    rows = [
        {"strategy": "best single", "tta": False, "members": ["a"], "weights": [1.0], "public_acc": 0.70,
         "private_acc": 0.69, "private_macro_f1": 0.6, "ci95": [0.66, 0.72], "ms_per_1000": 10.0},
        {"strategy": "greedy selection", "tta": True, "members": ["a", "b"], "weights": [0.5, 0.5],
         "public_acc": 0.71, "private_acc": 0.68, "private_macro_f1": 0.61, "ci95": [0.65, 0.71],
         "ms_per_1000": 43.0},
    ]  # fmt: skip
    metrics = {"chosen": {"strategy": "greedy selection", "tta": True}, "comparison": rows}
    member = ExportMember(file="member_0.safetensors", arch="cnn5", arch_kwargs={}, weight=1.0)
    ExportManifest(
        classes=("a", "b"), members=(member,), metrics=metrics, files={member.file: "0" * 64}
    ).write(export)
    report = search / "report"
    report.mkdir()
    (report / "report.html").write_text("<html><body><img src='weights.png'></body></html>")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(report / "weights.png")

    run_dir = Path(log_export_artifact(export, project="fersearch", dir=search / "wandb", report=report))
    assert read_offline_meta(run_dir)["group"] == search.name
    history, _ = read_offline_run(run_dir)
    logged = {k: v for row in history for k, v in row.items()}
    assert logged["ensembles/_type"] == "table-file" and logged["ensembles/nrows"] == 2
    assert logged["report_html/_type"] == "html-file"
    table = json.loads(next(run_dir.glob("files/media/table/ensembles_*.table.json")).read_text())
    exported = table["columns"].index("exported")
    assert [r[exported] for r in table["data"]] == [False, True]
    page = next(run_dir.glob("files/media/html/report_html_*.html")).read_text()
    assert "src='data:image/png;base64," in page and "weights.png" not in page
    assert capsys.readouterr().out.count("wandb sync") == 1


def test_inline_images_leaves_missing_and_remote_images_alone(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    page = "<img src='a.png'><img src=\"b.png\"><img src='https://x/c.png'>"
    assert inline_images(page, tmp_path) == (
        "<img src='data:image/png;base64,cG5n'><img src=\"b.png\"><img src='https://x/c.png'>"
    )
