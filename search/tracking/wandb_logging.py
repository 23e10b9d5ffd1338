"""W&B: one run per trial through Tune's callback, a summary run, and what an export's run shares with them
(mode, sync hint, inlined report); offline unless a key is set. The export's own run is
``search/serving/artifact.py`` (it reads the export manifest, a later stage's record).

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


def inline_images(page: str, folder: Path) -> str:
    """The report's HTML with its PNGs as data URIs: ``wandb.Html`` stores one file, so relative image
    links would be broken in the W&B panel."""

    def data_uri(m: re.Match) -> str:
        png = folder / m.group(2)
        if not png.is_file():
            return m.group(0)
        return f"{m.group(1)}data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}{m.group(3)}"

    return re.sub(r"""(src=['"])([^'"/]+\.png)(['"])""", data_uri, page)


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
