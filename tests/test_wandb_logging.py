"""W&B logging of a search (real wandb, offline): one group per search, constants in the run config,
the comparison as a table, the report as HTML, one sync command, no traceback at exit."""

from __future__ import annotations

import json
import re
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


#: A line Ray forwards to the driver from one of its worker processes: ``(<actor or task> pid=<pid>) <text>``.
WORKER_LINE = re.compile(r"^\((?P<who>[^()]*pid=[^()]*)\)(?: (?P<text>.*))?$")
COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def without_ray_sigterm_notices(stream: str) -> str:
    """``stream`` less each notice a Ray worker prints when Ray itself ends it, every other line kept.

    Ray 2.60 ends a Tune trial's actor process with SIGTERM once the trial is over (the raylet's log says
    "DisconnectClient: sending SIGTERM to pgid=<the trial's worker>" on every run of this test), and the
    worker's own handler (``sigterm_handler`` in ray/_private/worker.py) raises ``SystemExit(1)`` wherever
    the process is. When that is inside a finalizer -- the ``WeakSet`` callback of the trial's ending thread,
    likelier on a loaded machine -- Python prints "Exception ignored in: ..." with that traceback, and Ray
    forwards it as the trial's lines. Nothing of ours keeps a trial alive or can stop Ray's signal, so only
    that block is dropped: from a worker's "Exception ignored in:" to its "SystemExit: 1", every line a
    traceback's and one of them Ray's ``sigterm_handler`` frame."""
    lines = stream.splitlines()
    drop: set[int] = set()
    notices: dict[str, list[int]] = {}  # per worker, the lines of the notice it is printing
    for i, line in enumerate(lines):
        m = WORKER_LINE.match(COLOURS.sub("", line))
        if not m:
            continue
        who, text = m["who"], m["text"] or ""
        if text.startswith("Exception ignored in: "):
            notices[who] = [i]
        elif who in notices:
            block = notices[who]
            block.append(i)
            if text == "SystemExit: 1":
                del notices[who]
                frames = [COLOURS.sub("", lines[j]) for j in block]
                if any(f.endswith("in sigterm_handler") and "ray/_private/worker.py" in f for f in frames):
                    drop.update(block)
            elif not (text == "Traceback (most recent call last):" or not text.strip() or text[0] == " "):
                del notices[who]  # not a traceback line: not that notice
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


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
    for stream in map(without_ray_sigterm_notices, (done.stdout, done.stderr)):
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


def test_only_rays_sigterm_notice_is_left_out_of_the_exit_check():
    """The clean-exit check still fails on any other traceback or "Exception ignored", a worker's too."""

    def worker(who: str, *texts: str) -> list[str]:
        return [f"\x1b[36m({who})\x1b[0m {t}" for t in texts]

    notice = worker(
        "trainable pid=4242",
        "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f0c2a1b3d80>",
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3.11/_weakrefset.py", line 39, in _remove',
        "    def _remove(item, selfref=ref(self)):",
        "",
        '  File "/venv/site-packages/ray/_private/worker.py", line 1063, in sigterm_handler',
        "    raise_sys_exit_with_custom_error_message(",
        '  File "python/ray/_raylet.pyx", line 1, in ray._raylet.raise_sys_exit_with_custom_error_message',
        "SystemExit: 1",
    )
    other_exit = worker(  # the same shape from another cause: kept
        "trainable pid=4243",
        "Exception ignored in: <function Thing.__del__ at 0x7f0c2a1b3d81>",
        "Traceback (most recent call last):",
        '  File "/x/thing.py", line 3, in __del__',
        "SystemExit: 1",
    )
    interrupted = worker(  # a notice with a line of something else inside is not that notice: kept
        "trainable pid=4244",
        "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f0c2a1b3d82>",
        "epoch 3 done",
        '  File "/venv/site-packages/ray/_private/worker.py", line 1063, in sigterm_handler',
        "SystemExit: 1",
    )
    driver = [  # the driver's own: kept
        "Exception ignored in: <function WandbLoggerCallback.__del__ at 0x7f0c2a1b3d83>",
        "Traceback (most recent call last):",
        "AttributeError: 'NoneType' object has no attribute 'is_initialized'",
    ]
    stream = "\n".join([notice[0], "search finished", *notice[1:], *other_exit, *interrupted, *driver])
    kept = ["search finished", *other_exit, *interrupted, *driver]
    assert without_ray_sigterm_notices(stream).splitlines() == kept
    assert without_ray_sigterm_notices("\n".join(notice)) == ""
