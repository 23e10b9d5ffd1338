"""An export logged to W&B as a ``model`` artifact (and its HTML report as a ``report`` one).

It lives with the export, not in ``search/tracking``, because it reads the export's manifest
(:class:`ExportManifest`); the W&B plumbing it shares with the search's runs comes from tracking.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from search.serving.export import ExportManifest
from search.tracking import inline_images, print_sync_hint, wandb_mode


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


def log_export_artifact(
    export_dir: str | Path,
    *,
    project: str,
    run_name: str | None = None,
    mode: str | None = None,
    dir: str | Path | None = None,
    report: str | Path | None = None,
) -> str:
    """Log an export directory (:func:`export_ensemble`) as a W&B artifact of type ``model``; return the
    run dir. The manifest is read (and checked) first: a damaged export is an ``ExportError`` before any run.

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
    manifest = ExportManifest.read(root)
    default = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    mode = wandb_mode(mode or default)
    wandb_dir = Path(dir) if dir else root.parent / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")

    label = root.parent.name if root.name == "export" else root.name
    name = _artifact_name(project, label)
    members = manifest.members
    metadata = {
        "format": manifest.format,
        "classes": list(manifest.classes),
        "tta_flip": manifest.tta_flip,
        "n_members": len(members),
        "members": [m.to_dict() for m in members],
        "metrics": manifest.metrics,
        "versions": manifest.versions,
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
    metrics = manifest.metrics
    if metrics.get("comparison"):
        logged["ensembles"] = comparison_table(metrics)
    if logged:
        run.log(logged)
    public = metrics.get("PublicTest", {}).get("acc")
    private = metrics.get("PrivateTest", {}).get("acc")
    run.summary.update({"members": len(members), "public_acc": public, "private_acc": private})
    run_dir = Path(run.dir).parent
    run.finish()
    wandb.teardown()  # finish() can return before the service has written the last records; flush them now
    print_sync_hint(wandb_dir, mode)
    return str(run_dir)
