"""W&B: one run per trial through Tune's callback, a summary run, and an exported ensemble as an artifact;
offline unless a key is set.

Every run of a search is in one W&B group named after the search directory (two searches on the same
preset must not mix); values that do not change during a trial go to the run config, not to charts; when
offline, one ``wandb sync`` command for the whole search is printed instead of one hint per run.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from search.spec import SearchConfig


def wandb_mode(requested: str) -> str:
    if requested == "online" and not os.environ.get("WANDB_API_KEY"):
        print("WANDB_API_KEY is not set: logging to W&B offline (upload later with `wandb sync`)")
        return "offline"
    return requested


# Per-trial results that never change during a trial: run config, not a flat chart each.
CONSTANT_RESULTS = ("params", "train_images")
_sync_hinted: set[Path] = set()


def search_group(storage: str | Path) -> str:
    """The W&B group of a search: its directory's name (unique per search, unlike the preset name)."""
    return Path(storage).resolve().name


def sync_command(wandb_dir: str | Path) -> str:
    """The one command that uploads every offline run under ``wandb_dir`` (trials, summary, export)."""
    return f"wandb sync {Path(wandb_dir).resolve() / 'wandb'}/offline-run-*"


def print_sync_hint(wandb_dir: str | Path, mode: str) -> None:
    """Print :func:`sync_command` once per directory and process (the runs of a search share it)."""
    key = Path(wandb_dir).resolve()
    if mode == "offline" and key not in _sync_hinted:
        _sync_hinted.add(key)
        print(f"W&B runs are offline; upload them all with: {sync_command(key)}")


def _env(cfg: SearchConfig, storage: Path) -> tuple[str, Path]:
    mode = wandb_mode(cfg.wandb)
    wandb_dir = storage / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = str(wandb_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    return mode, wandb_dir


def _flushing_callback_cls():
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class FlushingLoggingActor(_WandbLoggingActor):
        """Ray kills a trial's logging actor as soon as ``run`` returns, and ``wandb.finish()`` can return
        before wandb's service has written the run: without the teardown a trial's run file may stay empty.
        Silent, because the actor's process did not inherit ``WANDB_SILENT`` and would print a sync hint
        per trial; constant results go to the run config."""

        def run(self):
            os.environ["WANDB_SILENT"] = "true"
            super().run()
            self._wandb.teardown()

        def _handle_result(self, result: dict) -> tuple[dict, dict]:
            log, config_update = super()._handle_result(result)
            for key in CONSTANT_RESULTS:
                if key in log:
                    config_update[key] = log.pop(key)
            return log, config_update

    class FlushingWandbLoggerCallback(WandbLoggerCallback):
        _logger_actor_cls = FlushingLoggingActor

        def __del__(self):
            """Ray's ``__del__`` stops logging actors that are left; after ``on_experiment_end`` none are,
            and at interpreter exit its module globals may already be gone (``AttributeError`` traceback
            printed after the search's output), so only call it while actors remain."""
            if getattr(self, "_trial_logging_actors", None):
                super().__del__()

    return FlushingWandbLoggerCallback


def wandb_callback(cfg: SearchConfig, storage: Path):
    """Per-trial runs, logged from the driver so a trial the scheduler stops keeps its metrics."""
    mode, wandb_dir = _env(cfg, storage)
    return _flushing_callback_cls()(
        project=cfg.wandb_project,
        group=search_group(storage),
        mode=mode,
        dir=str(wandb_dir),
        log_config=False,  # the trial's config is the run config already; per result it was 13 flat charts
        excludes=["objectives"],
    )


def log_summary(
    cfg: SearchConfig, storage: Path, rows: Sequence[dict], images: dict[str, Path]
) -> Path | None:
    """A summary run: the trials table and the report images (confusion matrix, Pareto front, …)."""
    import wandb

    mode, wandb_dir = _env(cfg, storage)
    run = wandb.init(
        project=cfg.wandb_project,
        group=search_group(storage),
        name=f"{search_group(storage)}-summary",
        job_type="summary",
        mode=mode,
        dir=str(wandb_dir),
        config=cfg.to_dict(),
    )
    columns = sorted({k for r in rows for k in r})
    table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
    run.log({"trials": table, **{k: wandb.Image(str(p)) for k, p in images.items() if p.is_file()}})
    if rows:
        best = max(rows, key=lambda r: r.get("val_acc", -1))
        run.summary.update({"best_val_acc": best.get("val_acc"), "best_trial": best.get("trial_id")})
    run_dir = Path(run.dir).parent
    run.finish()
    wandb.teardown()  # finish() can return before the service has written the last records; flush them now
    print_sync_hint(wandb_dir, mode)
    return run_dir


def _artifact_name(*parts: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(p for p in parts if p)).strip("-.") or "ensemble"


def comparison_table(metrics: dict):
    """The ensemble comparison (the main result) as a ``wandb.Table``, the exported row flagged."""
    import wandb

    chosen = metrics.get("chosen", {})
    columns = ["strategy", "tta", "exported", "public_acc", "private_acc", "ci95_low", "ci95_high",
               "private_macro_f1", "ms_per_1000", "members"]  # fmt: skip
    data = []
    for r in metrics.get("comparison", []):
        members = ", ".join(f"{m}×{w:.2f}" for m, w in zip(r["members"], r["weights"], strict=True))
        exported = (r["strategy"], r["tta"]) == (chosen.get("strategy"), chosen.get("tta"))
        data.append([r["strategy"], r["tta"], exported, r["public_acc"], r["private_acc"], r["ci95"][0],
                     r["ci95"][1], r["private_macro_f1"], r["ms_per_1000"], members])  # fmt: skip
    return wandb.Table(columns=columns, data=data)


def inline_images(page: str, folder: Path) -> str:
    """The report's HTML with its PNGs as data URIs: ``wandb.Html`` stores one file, so relative image
    links would be broken in the W&B panel."""

    def data_uri(m: re.Match) -> str:
        png = folder / m.group(2)
        if not png.is_file():
            return m.group(0)
        return f"{m.group(1)}data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}{m.group(3)}"

    return re.sub(r"""(src=['"])([^'"/]+\.png)(['"])""", data_uri, page)


def log_export_artifact(
    export_dir: str | Path,
    *,
    project: str,
    run_name: str | None = None,
    mode: str | None = None,
    dir: str | Path | None = None,
    report: str | Path | None = None,
) -> str:
    """Log an export directory (``search/serving/export.py``) as a W&B artifact of type ``model``; return the
    run dir.

    The artifact holds the export's files (``model.onnx``, ``member_*.safetensors``, ``manifest.json``) and
    carries the manifest's classes, members (arch, kwargs, weight, PublicTest accuracy) and metrics as
    metadata; it is named ``<project>-<search>`` (the export's folder name when it isn't ``export``). The HTML
    report -- ``report`` (``report.html`` or its folder), else ``<export_dir>/report/``, else a
    ``report.html`` in the export -- goes in a second artifact of type ``report``, and its PNGs are logged as
    images. ``mode`` defaults to ``$WANDB_MODE``, else online when ``WANDB_API_KEY`` is set, else offline
    (``wandb sync <run dir>`` uploads it later); ``dir`` defaults to ``<export_dir>/../wandb``. The run is in
    the search's group; it logs the comparison as a ``wandb.Table`` and ``report.html`` as ``wandb.Html``.
    """
    import wandb

    root = Path(export_dir).resolve()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: missing; not a fersearch export")
    manifest = json.loads(manifest_path.read_text())
    default = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    mode = wandb_mode(mode or default)
    wandb_dir = Path(dir) if dir else root.parent / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")

    label = root.parent.name if root.name == "export" else root.name
    name = _artifact_name(project, label)
    members = manifest.get("members", [])
    metadata = {
        "format": manifest.get("format"),
        "classes": manifest.get("classes", []),
        "tta_flip": manifest.get("tta_flip", False),
        "n_members": len(members),
        "members": [
            {k: m.get(k) for k in ("file", "trial_id", "arch", "arch_kwargs", "weight", "val_acc")}
            for m in members
        ],
        "metrics": manifest.get("metrics", {}),
        "versions": manifest.get("versions", {}),
    }
    model = wandb.Artifact(name, type="model", description=f"fersearch ensemble exported to {root}",
                           metadata=metadata)  # fmt: skip
    for f in sorted(root.iterdir()):
        if f.is_file():
            model.add_file(str(f), name=f.name)

    report_dir = Path(report) if report is not None else root / "report"
    if report is not None and not report_dir.exists():
        raise FileNotFoundError(f"{report_dir}: no such report")
    if report_dir.is_file():
        report_dir = report_dir.parent
    if report is None and not report_dir.is_dir() and (root / "report.html").is_file():
        report_dir = root
    report_files = (
        [f for f in sorted(report_dir.iterdir()) if f.is_file() and f.suffix.lower() in (".html", ".png")]
        if report_dir.is_dir()
        else []
    )

    run = wandb.init(
        project=project,
        group=label,
        name=run_name or f"{label}-export",
        job_type="export",
        mode=mode,
        dir=str(wandb_dir),
        config={"export_dir": str(root), "members": len(members)},
    )
    run.log_artifact(model, aliases=["latest"])
    if report_files:
        report_art = wandb.Artifact(_artifact_name(project, label, "report"), type="report")
        for f in report_files:
            report_art.add_file(str(f), name=f"report/{f.name}")
        run.log_artifact(report_art)
    logged = {f"report/{f.stem}": wandb.Image(str(f)) for f in report_files if f.suffix.lower() == ".png"}
    pages = [f for f in report_files if f.suffix.lower() == ".html"]
    if pages:
        logged["report_html"] = wandb.Html(inline_images(pages[0].read_text(), report_dir))
    if manifest.get("metrics", {}).get("comparison"):
        logged["ensembles"] = comparison_table(manifest["metrics"])
    if logged:
        run.log(logged)
    public = manifest.get("metrics", {}).get("PublicTest", {}).get("acc")
    private = manifest.get("metrics", {}).get("PrivateTest", {}).get("acc")
    run.summary.update({"members": len(members), "public_acc": public, "private_acc": private})
    run_dir = Path(run.dir).parent
    run.finish()
    wandb.teardown()  # finish() can return before the service has written the last records; flush them now
    print_sync_hint(wandb_dir, mode)
    return str(run_dir)


def _offline_records(run_dir: str | Path):
    """The records of an offline run's ``run-*.wandb`` log, in order.

    The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records (4-byte CRC, 2-byte
    length, 1-byte type: full, or first / middle / last fragment of a record split across blocks).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (2, 3):
            pending = chunk if kind == 2 else pending + chunk
            continue
        payload, pending = (pending + chunk, b"") if kind == 4 else (chunk, pending)
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def read_offline_run(run_dir: str | Path) -> tuple[list[dict], dict]:
    """(history rows, summary) of an offline W&B run, read from its ``run-*.wandb`` log.

    Lets users (and tests) check what an offline run holds before ``wandb sync``.
    """
    history: list[dict] = []
    summary: dict = {}
    for record in _offline_records(run_dir):
        which = record.WhichOneof("record_type")
        if which == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif which == "summary":
            summary.update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
    return history, summary


def read_offline_meta(run_dir: str | Path) -> dict:
    """An offline run's group, name, job type and config (every config update folded in)."""
    meta: dict = {"config": {}}
    for record in _offline_records(run_dir):
        which = record.WhichOneof("record_type")
        if which == "run":
            r = record.run
            meta.update(group=r.run_group, name=r.display_name, job_type=r.job_type)
            items = r.config.update
        elif which == "config":
            items = record.config.update
        else:
            continue
        meta["config"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return meta


def read_offline_artifacts(run_dir: str | Path) -> list[dict]:
    """The artifacts an offline W&B run logged: name, type, aliases, metadata and files (path -> size)."""
    found = []
    for record in _offline_records(run_dir):
        if record.WhichOneof("record_type") != "artifact":
            continue
        a = record.artifact
        found.append(
            {
                "name": a.name,
                "type": a.type,
                "aliases": list(a.aliases),
                "metadata": json.loads(a.metadata) if a.metadata else {},
                "files": {e.path: e.size for e in a.manifest.contents},
                "digest": a.digest,
            }
        )
    return found
