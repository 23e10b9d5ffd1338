"""W&B: one run per trial through Tune's callback, plus a summary run; offline unless a key is set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from search.config import SearchConfig


def wandb_mode(requested: str) -> str:
    if requested == "online" and not os.environ.get("WANDB_API_KEY"):
        print("WANDB_API_KEY is not set: logging to W&B offline (upload later with `wandb sync`)")
        return "offline"
    return requested


def _env(cfg: SearchConfig, storage: Path) -> tuple[str, Path]:
    mode = wandb_mode(cfg.wandb)
    wandb_dir = storage / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = str(wandb_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    return mode, wandb_dir


def wandb_callback(cfg: SearchConfig, storage: Path):
    """Per-trial runs, logged from the driver so a trial the scheduler stops keeps its metrics."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode, wandb_dir = _env(cfg, storage)
    return WandbLoggerCallback(
        project=cfg.wandb_project,
        group=cfg.name,
        mode=mode,
        dir=str(wandb_dir),
        log_config=True,
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
        group=cfg.name,
        name=f"{cfg.name}-summary",
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
    return run_dir
