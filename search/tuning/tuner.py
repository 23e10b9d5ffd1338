"""Ray Tune + Optuna (TPE, or NSGA-II when multi-objective) + ASHA, persisted under one storage path.

Layout of a search directory: ``search.json`` (the config and data it ran with), ``optuna.journal`` (the
study, durable and safe under parallel writers, unlike SQLite), ``tune/`` (the Tune experiment: trials,
checkpoints, searcher state), ``pareto.csv``/``pareto.png`` when multi-objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.spec import HPARAMS, Domain, Range, SearchConfig
from search.trial import (
    FINISHED,
    PROGRESS,
    PROGRESS_MAX,
    TRIAL_FILE,
    VAL_FILE,
    SearchPlan,
    TrialCheckpoint,
    TrialData,
    rung_fractions,
    train_fer,
)
from search.tuning.states import (
    DID_NOT_LEARN,
    PRUNED_FILE,
    ChanceLevel,
    close_open_trials,
    count_states,
    pruned_trials,
    trial_state,
)

METRIC = "val_acc"
MODES = {"val_acc": "max", "latency_ms": "min", "params": "min"}
EXPERIMENT = "tune"
#: Tune keeps each trial's checkpoints by this score (search.trial.trainable.keep_score): snapshots first.
KEEP_SCORE = "keep_score"
#: Tune's own cut comes this long after a budget plan's deadline: trials plan to end by the deadline, the
#: cut only catches one that misjudged its pace.
PLAN_SLACK_S = 20.0


class SearchFailed(Exception):
    """No trial produced a usable model; the message says why, trial by trial."""

    def __init__(self, message: str, trials: list[TrialRecord] | None = None) -> None:
        super().__init__(message)
        self.trials = trials or []

    @classmethod
    def of(cls, trials: list[TrialRecord], where: Path) -> SearchFailed:
        states = count_states(t.status for t in trials) or "no trial ran"
        first = next((t for t in trials if t.error), None)
        why = f"; first error: trial {first.trial_id}: {first.error}" if first else ""
        return cls(f"{where}: no trial produced a usable model ({states}){why}; see trials.csv", trials)


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
    hparams: dict | None = None
    metrics: dict | None = None

    @property
    def usable(self) -> bool:
        """Whether the trial left a model worth ensembling: a checkpoint with predictions that learned."""
        learned = self.status != DID_NOT_LEARN
        return learned and self.checkpoint is not None and (self.checkpoint / VAL_FILE).is_file()


def _suggest(trial, name: str, dom: Domain):
    if isinstance(dom, Range):
        if dom.step is not None and float(dom.step).is_integer() and float(dom.low).is_integer():
            return trial.suggest_int(name, int(dom.low), int(dom.high), step=int(dom.step), log=dom.log)
        return trial.suggest_float(name, dom.low, dom.high, log=dom.log, step=dom.step)
    if len(dom) == 1:
        return dom[0]
    return trial.suggest_categorical(name, list(dom))


class DefineSpace:
    """Optuna define-by-run space: each arch's own kwargs are sampled only in that arch's trials.

    A class rather than a closure so Tune can pickle the searcher state for resume.
    """

    def __init__(self, cfg: SearchConfig, extra: dict | None = None) -> None:
        self.space = cfg.space
        self.fixed = {
            "max_epochs": cfg.max_epochs,
            "cycles": cfg.cycles,
            "cycle_ratio": cfg.reduction_factor,
            "precision": cfg.precision,
            "seed": cfg.seed,
            "cpus_per_trial": cfg.resources.cpu,
            "gpus_per_trial": cfg.resources.gpu,
            "early_stop_patience": cfg.early_stop_patience,
            "objectives": list(cfg.objectives),
            "workers_per_trial": cfg.workers_per_trial,
            "checkpoints_to_keep": cfg.checkpoints_to_keep,
            **(extra or {}),
        }

    def __call__(self, trial) -> dict:
        s = self.space
        arch = trial.suggest_categorical("arch", [a.name for a in s.archs])
        constants = {}
        for key, dom in s.arch(arch).kwargs.items():
            value = _suggest(trial, f"{arch}.{key}", dom)
            if not isinstance(dom, Range) and len(dom) == 1:
                constants[f"{arch}.{key}"] = value
        for name in (n for n in HPARAMS if n != "arch"):  # the arch is suggested first, above
            dom = getattr(s, name)
            value = _suggest(trial, name, dom)
            if not isinstance(dom, Range) and len(dom) == 1:
                constants[name] = value
        # each trial its own seed (Optuna's trial number is deterministic): ensemble members differ in
        # initialisation and data order, not only in hyperparameters
        return {**self.fixed, **constants, "seed": int(self.fixed["seed"]) + trial.number}


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _trainable(cfg: SearchConfig, data: TrialData, storage: Path):
    from ray import tune

    if cfg.workers_per_trial > 1:
        from search.trial import ddp_trainable

        return ddp_trainable(data, storage, max_failures=cfg.max_failures)
    return tune.with_resources(
        tune.with_parameters(train_fer, data=data), {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    )


def trial_slots(cfg: SearchConfig) -> int | None:
    """How many trials fit the cluster at once; with a searcher Tune otherwise keeps a single trial pending,
    so a multi-node cluster would fill one trial at a time."""
    import ray

    if not ray.is_initialized():
        return None
    total = ray.cluster_resources()
    cpu_slots = int(total.get("CPU", 0) // (cfg.resources.cpu * cfg.workers_per_trial))
    slots = [cpu_slots]
    if cfg.resources.gpu > 0:
        slots.append(int(total.get("GPU", 0) // (cfg.resources.gpu * cfg.workers_per_trial)))
    return max(1, min(slots))


def _optuna_storage(cfg: SearchConfig, storage: Path):
    """An RDB URL when the spec gives one (e.g. a PostgreSQL server shared by several searches), else a
    JournalStorage file beside the experiment: durable, and safe with parallel writers where SQLite locks."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if cfg.optuna_storage:
        return RDBStorage(cfg.optuna_storage)
    return JournalStorage(JournalFileBackend(str(storage / "optuna.journal")))


def build_tuner(cfg: SearchConfig, data: TrialData, storage: Path, plan: SearchPlan | None = None):
    """The Tuner for ``cfg``; with a budget ``plan`` each trial gets its time and the search's deadline,
    ASHA measures trials by their progress through their own plans (a rung is a fraction of a trial's
    budget, where its cosine cycle ends), and a plan of one round runs without pruning (no trial waits for
    the slot a pruned one would free)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from search.tuning.honest import HonestOptunaSearch, RecordingASHA

    storage = storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    metrics = list(cfg.objectives)
    if cfg.multi_objective:
        sampler = optuna.samplers.NSGAIISampler(
            seed=cfg.seed, population_size=max(4, min(20, cfg.num_samples))
        )
        metric, mode = metrics, [MODES[m] for m in metrics]
    else:
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(4, cfg.num_samples))
        metric, mode = METRIC, "max"
    extra = None
    if plan is not None:
        extra = {
            "trial_budget_s": plan.trial_budget_s,
            "search_deadline": plan.search_deadline,
            "cycles": plan.cycles,
        }
    record = str(storage / PRUNED_FILE)
    searcher = HonestOptunaSearch(
        DefineSpace(cfg, extra),
        pruned_record=record,
        metric=metric,
        mode=mode,
        sampler=sampler,
        study_name=cfg.name,
        storage=_optuna_storage(cfg, storage),
        points_to_evaluate=[dict(p) for p in cfg.points_to_evaluate] or None,
    )
    if plan is None:
        scheduler = RecordingASHA(
            record=record,
            time_attr="training_iteration",
            metric=METRIC,
            mode="max",
            max_t=cfg.max_epochs,
            grace_period=min(cfg.grace_period, cfg.max_epochs),
            reduction_factor=cfg.reduction_factor,
        )
    elif plan.rounds > 1:
        first_rung = rung_fractions(plan.cycles, cfg.reduction_factor)[0]
        scheduler = RecordingASHA(
            record=record,
            time_attr=PROGRESS,
            metric=METRIC,
            mode="max",
            max_t=PROGRESS_MAX,
            grace_period=PROGRESS_MAX * first_rung,
            reduction_factor=cfg.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    from search.tuning.progress import ProgressView, mode, silence_tune_reporter

    silence_tune_reporter()

    # the first progress reporter among the callbacks is the one Tune drives: Ray's own stays silent
    view = ProgressView(
        plan.trials if plan else cfg.num_samples, plan.search_s if plan else cfg.time_budget_s,
        pruned_record=record, silent=mode() == "quiet",
        chance=ChanceLevel.of_labels(data.val_y, data.num_classes),
    )  # fmt: skip
    callbacks: list = [view]
    if cfg.wandb != "off":
        from search.tracking import wandb_callback

        callbacks.append(wandb_callback(cfg, storage))
    return tune.Tuner(
        _trainable(cfg, data, storage),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=plan.trials if plan else cfg.num_samples,
            time_budget_s=plan.search_s + PLAN_SLACK_S if plan else cfg.time_budget_s,
            max_concurrent_trials=cfg.max_concurrent_trials or trial_slots(cfg),
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=experiment_root(cfg, storage),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=cfg.checkpoints_to_keep + (plan.cycles if plan else cfg.cycles),
                checkpoint_score_attribute=KEEP_SCORE,
                checkpoint_score_order="max",
            ),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,
            verbose=1 if mode() == "verbose" else 0,
        ),
    )


def run_search(
    cfg: SearchConfig, data: TrialData, storage: Path, *, resume: bool = False, plan: SearchPlan | None = None
) -> list[TrialRecord]:
    """Run (or, with ``resume``, restore and finish) the search; every trial, best PublicTest first."""
    from ray import tune

    path = f"{experiment_root(cfg, storage)}/{EXPERIMENT}"
    if resume:
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"{path}: no Tune experiment to resume")
        tuner = tune.Tuner.restore(path, trainable=_trainable(cfg, data, storage), resume_unfinished=True)
    else:
        tuner = build_tuner(cfg, data, storage, plan)
    grid = tuner.fit()
    local = storage.resolve() / EXPERIMENT
    if cfg.storage_uri:
        fetch_experiment(path, local)
    import optuna

    close_open_trials(optuna.load_study(study_name=cfg.name, storage=_optuna_storage(cfg, storage)))
    pruned = pruned_trials(storage.resolve() / PRUNED_FILE)
    chance = ChanceLevel.of_labels(data.val_y, data.num_classes)
    records = [_record(r, grid.experiment_path, local, pruned, chance) for r in grid]
    return sorted(records, key=lambda r: (-r.val_acc, r.trial_id))


def experiment_root(cfg: SearchConfig, storage: Path) -> str:
    """Where Tune persists: the search directory, or ``<storage_uri>/<search dir name>`` (any pyarrow
    filesystem URI: S3, GCS, HDFS, ``file://``), which every node reaches without a shared mount."""
    if cfg.storage_uri:
        return f"{cfg.storage_uri.rstrip('/')}/{storage.resolve().name}"
    return str(storage.resolve())


def fetch_experiment(uri: str, local: Path) -> None:
    """Copy the experiment from its storage URI into the search directory, where ensembles, export and
    reports read it."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def _record(result, experiment_path: str, local: Path, pruned: set[str], chance: ChanceLevel) -> TrialRecord:
    """One trial's row with its honest state (``pruned``: the trials ASHA stopped; ``chance``: what a model
    that learned nothing scores); checkpoint paths point into the local copy of the experiment."""

    cfg = result.config or {}
    metrics = result.metrics or {}
    ckpt = best_kept_checkpoint(result, experiment_path, local)
    if ckpt is None and metrics.get("checkpoint_path"):
        from search.trial import best_train_checkpoint

        ckpt = best_train_checkpoint(Path(metrics["checkpoint_path"]).parent)
    best_epoch, val_acc, val_loss, saved_cfg = 0, -1.0, None, {}
    if ckpt is not None and (ckpt / TRIAL_FILE).is_file():
        saved = TrialCheckpoint(ckpt).read()
        best_epoch, val_acc, saved_cfg = int(saved.best_epoch), float(saved.best_val_acc), saved.config
        val_loss = saved.val_loss
    trial_id = str(metrics.get("trial_id") or Path(result.path).name.removeprefix("trial_"))
    epochs = int(metrics.get("epoch", 0))
    status = trial_state(
        error=result.error is not None,
        epochs=epochs,
        finished=bool(
            metrics.get(FINISHED, epochs >= int(metrics.get("planned_epochs") or cfg.get("max_epochs") or 0))
        ),
        pruned=trial_id in pruned,
        learned=ckpt is None or chance.learned(val_acc, val_loss),
    )
    return TrialRecord(
        trial_id=trial_id,
        arch=cfg.get("arch", "-"),
        lr=float(cfg.get("lr", float("nan"))),
        dropout=float(cfg.get("dropout", float("nan"))),
        arch_kwargs=dict(saved_cfg.get("arch_kwargs", {})),
        val_acc=val_acc,
        epochs=int(metrics.get("epoch", 0)),
        best_epoch=best_epoch,
        checkpoint=ckpt,
        status=status,
        error=_first_line(result.error) if result.error else None,
        hparams={k: v for k, v in saved_cfg.items() if k != "arch_kwargs"} or None,
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
    )


def best_kept_checkpoint(result, experiment_path: str, local: Path) -> Path | None:
    """The kept checkpoint with the best PublicTest accuracy, preferring one that holds predictions (a
    later epoch that only tied the best holds none), the earliest on a tie."""
    kept = []
    for checkpoint, metrics in result.best_checkpoints or []:
        path = _localise(checkpoint.path, experiment_path, local)
        kept.append(((path / VAL_FILE).is_file(), metrics.get(METRIC, -1.0), -metrics.get("epoch", 0), path))
    return max(kept, key=lambda k: k[:3])[3] if kept else None


def _localise(path: str, experiment_path: str, local: Path) -> Path:
    """A path inside the experiment (local, or on the storage URI's filesystem) → the same in ``local``."""
    root = experiment_path.split("://", 1)[-1].rstrip("/")
    inner = path.split("://", 1)[-1]
    return local / Path(inner).relative_to(root) if inner.startswith(root + "/") else Path(path)


def _first_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    key = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else repr(err))
    return key.strip()
