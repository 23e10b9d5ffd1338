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


def _flushing_callback_cls():
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class FlushingLoggingActor(_WandbLoggingActor):
        """Ray kills a trial's logging actor as soon as ``run`` returns, and ``wandb.finish()`` can return
        before wandb's service has written the run: without the teardown a trial's run file may stay empty."""

        def run(self):
            super().run()
            self._wandb.teardown()

    class FlushingWandbLoggerCallback(WandbLoggerCallback):
        _logger_actor_cls = FlushingLoggingActor

    return FlushingWandbLoggerCallback


def wandb_callback(cfg: SearchConfig, storage: Path):
    """Per-trial runs, logged from the driver so a trial the scheduler stops keeps its metrics."""
    mode, wandb_dir = _env(cfg, storage)
    return _flushing_callback_cls()(
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
    wandb.teardown()  # finish() can return before the service has written the last records; flush them now
    return run_dir


def read_offline_run(run_dir: str | Path) -> tuple[list[dict], dict]:
    """(history rows, summary) of an offline W&B run, read from its ``run-*.wandb`` log.

    Lets users (and tests) check what an offline run holds before ``wandb sync``. The file is a LevelDB-style
    log: a 7-byte header, then 32 KiB blocks of records (4-byte CRC, 2-byte length, 1-byte type).
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    block, pos, pending = 32768, 7, b""
    history: list[dict] = []
    summary: dict = {}
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
