"""Ray Tune + Optuna (TPE) + ASHA over architecture, dropout and learning rate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from search.config import SearchConfig
from search.trainable import TRIAL_FILE, VAL_FILE, TrialData, train_fer

METRIC = "val_acc"


@dataclass(frozen=True)
class TrialRecord:
    """A finished (or stopped) trial and where its best epoch lives."""

    trial_id: str
    arch: str
    lr: float
    dropout: float
    arch_kwargs: dict
    val_acc: float
    epochs: int
    best_epoch: int
    checkpoint: Path | None
    status: str
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.checkpoint is not None and (self.checkpoint / VAL_FILE).is_file()


class DefineSpace:
    """Optuna define-by-run space; a class (not a closure) so Tune can pickle the searcher state."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.space = cfg.space
        self.fixed = {
            "max_epochs": cfg.max_epochs,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "augment": cfg.augment,
            "cpus_per_trial": cfg.cpus_per_trial,
        }

    def __call__(self, trial) -> dict:
        arch = trial.suggest_categorical("arch", list(self.space.archs))
        trial.suggest_float("lr", *self.space.lr, log=True)
        trial.suggest_float("dropout", *self.space.dropout)
        return {**self.fixed, "arch_kwargs": dict(self.space.arch_kwargs.get(arch, {}))}


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def build_tuner(cfg: SearchConfig, data: TrialData, storage: Path, name: str = "search"):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        DefineSpace(cfg),
        metric=METRIC,
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(4, cfg.num_samples)),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=METRIC,
        mode="max",
        max_t=cfg.max_epochs,
        grace_period=min(cfg.grace_period, cfg.max_epochs),
        reduction_factor=cfg.reduction_factor,
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_fer, data=data), {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    )
    callbacks = []
    if cfg.wandb != "off":
        from search.wandb_logging import wandb_callback

        callbacks.append(wandb_callback(cfg, storage, name))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            time_budget_s=cfg.time_budget_s,
            max_concurrent_trials=cfg.max_concurrent_trials,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage.resolve()),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"
            ),
            callbacks=callbacks,
            verbose=1,
        ),
    )


def run_search(cfg: SearchConfig, data: TrialData, storage: Path, name: str = "search") -> list[TrialRecord]:
    """Run the search and return every trial, best PublicTest accuracy first."""
    results = build_tuner(cfg, data, storage, name).fit()
    records = [_record(r) for r in results]
    return sorted(records, key=lambda r: (-r.val_acc, r.trial_id))


def _record(result) -> TrialRecord:
    cfg = result.config or {}
    metrics = result.metrics or {}
    ckpt = Path(result.checkpoint.path) if result.checkpoint is not None else None
    best_epoch = 0
    val_acc = float("nan")
    if ckpt is not None and (ckpt / TRIAL_FILE).is_file():
        saved = json.loads((ckpt / TRIAL_FILE).read_text())["metrics"]
        best_epoch, val_acc = int(saved["epoch"]), float(saved["val_acc"])
    trial_id = str(metrics.get("trial_id") or Path(result.path).name)
    return TrialRecord(
        trial_id=trial_id,
        arch=cfg.get("arch", "?"),
        lr=float(cfg.get("lr", float("nan"))),
        dropout=float(cfg.get("dropout", float("nan"))),
        arch_kwargs=dict(cfg.get("arch_kwargs", {}) or {}),
        val_acc=val_acc if val_acc == val_acc else -1.0,
        epochs=int(metrics.get("epoch", 0)),
        best_epoch=best_epoch,
        checkpoint=ckpt,
        status="error" if result.error else "done",
        error=str(result.error).splitlines()[0] if result.error else None,
    )
