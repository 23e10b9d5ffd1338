"""Typed search configuration: the Python API and the YAML spec load into the same frozen objects.

A value in the space is either a list of choices or a range ``{low, high, log}``; each architecture brings
its own sub-space (define-by-run, so parameters of one family never appear in another's trials).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

OPTIMIZERS = ("adam", "nadam", "sgd")
SCHEDULES = ("onecycle", "cosine", "plateau")
VARIANTS = ("original", "balanced", "filtered", "filtered-balanced")
OBJECTIVES = ("val_acc", "latency_ms", "params")


class SpecError(ValueError):
    """A search spec that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Range:
    """A numeric range; ``log`` samples on a log scale, ``step`` makes it discrete."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise SpecError(f"range low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise SpecError(f"log range needs low > 0, got {self.low}")

    def contains(self, v: float) -> bool:
        return self.low <= v <= self.high


Domain = Range | tuple


def _check_domain(name: str, dom: Domain, lo: float | None = None, hi: float | None = None) -> None:
    values = [dom.low, dom.high] if isinstance(dom, Range) else list(dom)
    if not values:
        raise SpecError(f"{name}: no choices")
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise SpecError(f"{name}: value {v} outside [{lo}, {hi}]")


def _check_choices(name: str, dom: tuple, allowed: tuple[str, ...]) -> None:
    bad = [v for v in dom if v not in allowed]
    if bad:
        raise SpecError(f"{name}: unknown value(s) {bad}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class ArchSpace:
    """One architecture and its own sub-space, e.g. ``mini_xception`` with ``width: [0.5, 1.0, 2.0]``."""

    name: str
    kwargs: dict[str, Domain] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    archs: tuple[ArchSpace, ...] = (ArchSpace("mini_xception"), ArchSpace("vgg_fer11"))
    lr: Domain = Range(3e-4, 3e-3, log=True)
    dropout: Domain = Range(0.0, 0.5)
    optimizer: Domain = ("adam",)
    batch_size: Domain = (64,)
    weight_decay: Domain = (0.0,)
    label_smoothing: Domain = (0.0,)
    class_weighted: Domain = (False,)
    variant: Domain = ("original",)
    augment: Domain = (1.0,)
    schedule: Domain = ("onecycle",)

    def __post_init__(self) -> None:
        if not self.archs:
            raise SpecError("space.archs is empty")
        from models import list_models

        known = list_models()
        for a in self.archs:
            if a.name not in known:
                raise SpecError(f"space.archs: unknown model {a.name!r}; registered: {', '.join(known)}")
        _check_domain("space.lr", self.lr, 1e-7, 10.0)
        _check_domain("space.dropout", self.dropout, 0.0, 0.95)
        _check_domain("space.weight_decay", self.weight_decay, 0.0, 1.0)
        _check_domain("space.label_smoothing", self.label_smoothing, 0.0, 0.5)
        _check_domain("space.augment", self.augment, 0.0, 2.0)
        _check_domain("space.batch_size", self.batch_size, 1, 4096)
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("variant", VARIANTS)):
            dom = getattr(self, name)
            if isinstance(dom, Range):
                raise SpecError(f"space.{name} must be a list of choices, not a range")
            _check_choices(f"space.{name}", dom, allowed)

    def arch(self, name: str) -> ArchSpace:
        return next(a for a in self.archs if a.name == name)


@dataclass(frozen=True)
class Resources:
    """Per-trial resources; fractional GPUs let several small FER nets share one device."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu <= 0 or self.gpu < 0:
            raise SpecError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={self.cpu} gpu={self.gpu}")


@dataclass(frozen=True)
class MergeConfig:
    """The parallel-merge net built from the top trials after the search (search/merge.py); ``bases: 0``
    turns it off. ``time_budget_s`` bounds its training (checked after each epoch)."""

    bases: int = 3
    phase1_epochs: int = 3
    phase2_epochs: int = 2
    lr: float = 1e-3
    phase2_lr: float = 1e-4
    batch_size: int = 128
    dropout: float = 0.25
    augment: float = 1.0
    time_budget_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bases < 0 or self.phase1_epochs < 0 or self.phase2_epochs < 0:
            raise SpecError(f"merge: bases and epochs must be >= 0, got {self}")
        if self.bases and self.phase1_epochs + self.phase2_epochs == 0:
            raise SpecError("merge: needs at least one epoch in phase 1 or 2")


@dataclass(frozen=True)
class SearchConfig:
    """One search: space, objectives, budget, resources, storage and logging.

    ``run_budget_s`` turns on the budget planner (search/plan.py): the whole ``fersearch run`` (data,
    search, selection, export) fits in it, and the planner sets the number of trials, their time and the
    search's time budget from the throughput measured on this machine (``num_samples`` and
    ``time_budget_s`` are then ignored; ``max_epochs`` only caps a trial). ``cycles``: cosine cycles per
    trial, their ends on ASHA's rungs (ratio ``reduction_factor``), each end an annealed snapshot that
    joins the ensemble library. ``min_epochs_per_trial``: the planner adds rounds of trials only while each
    still gets this many epochs. ``precision: bf16``: training forward passes under bfloat16 autocast.
    """

    name: str = "search"
    space: SearchSpace = field(default_factory=SearchSpace)
    objectives: tuple[str, ...] = ("val_acc",)
    num_samples: int = 8
    time_budget_s: float | None = None
    max_epochs: int = 10
    grace_period: int = 2
    reduction_factor: int = 3
    early_stop_patience: int | None = None
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int | None = None
    seed: int = 0
    points_to_evaluate: tuple[dict, ...] = ()
    wandb: str = "off"
    wandb_project: str = "fersearch"
    top_k: int = 8
    checkpoints_to_keep: int = 2
    max_failures: int = 0
    workers_per_trial: int = 1
    optuna_storage: str | None = None
    merge: MergeConfig = field(default_factory=MergeConfig)
    balanced_per_class: int = 8000
    ensemble_bags: int = 0
    storage_uri: str | None = None
    run_budget_s: float | None = None
    cycles: int = 1
    min_epochs_per_trial: int = 30
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise SpecError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_epochs < 1:
            raise SpecError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise SpecError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if self.wandb not in ("off", "offline", "online"):
            raise SpecError(f"wandb must be off, offline or online, got {self.wandb!r}")
        if not self.objectives or self.objectives[0] != "val_acc":
            raise SpecError(f"objectives must start with val_acc, got {list(self.objectives)}")
        _check_choices("objectives", self.objectives, OBJECTIVES)
        if self.checkpoints_to_keep < 1:
            raise SpecError("checkpoints_to_keep must be >= 1")
        if self.storage_uri is not None and "://" not in self.storage_uri:
            raise SpecError(
                f"storage_uri must be a pyarrow filesystem URI (s3://, gs://, hdfs://, file://), "
                f"got {self.storage_uri!r}; for a shared mount give the search directory instead"
            )
        if self.ensemble_bags < 0:
            raise SpecError(
                f"ensemble_bags must be >= 0 (0: plain greedy selection), got {self.ensemble_bags}"
            )
        if self.balanced_per_class < 1:
            raise SpecError(f"balanced_per_class must be >= 1, got {self.balanced_per_class}")
        if self.workers_per_trial < 1:
            raise SpecError(f"workers_per_trial must be >= 1, got {self.workers_per_trial}")
        if self.run_budget_s is not None and self.run_budget_s <= 0:
            raise SpecError(f"run_budget_s must be > 0, got {self.run_budget_s}")
        if self.cycles < 1:
            raise SpecError(f"cycles must be >= 1, got {self.cycles}")
        if self.precision not in ("fp32", "bf16"):
            raise SpecError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.min_epochs_per_trial < 1:
            raise SpecError(f"min_epochs_per_trial must be >= 1, got {self.min_epochs_per_trial}")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def cpus_per_trial(self) -> float:
        return self.resources.cpu

    def to_dict(self) -> dict:
        """The spec form (what ``config_from_dict`` reads back), JSON-serialisable."""
        d = asdict(self)
        d["space"]["archs"] = [{a["name"]: a["kwargs"]} for a in d["space"]["archs"]]
        return d

    def replace(self, **changes: Any) -> SearchConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise SpecError(f"unknown SearchConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def demo_config() -> SearchConfig:
    """The embedded default: a few minutes on two cores, on the synthetic set."""
    return SearchConfig(
        name="demo",
        space=SearchSpace(archs=(ArchSpace("mini_xception"), ArchSpace("vgg_fer11"))),
        num_samples=6,
        time_budget_s=300,
        max_epochs=6,
        grace_period=2,
        top_k=6,
        merge=MergeConfig(phase1_epochs=2, phase2_epochs=1),
    )


def quick_config() -> SearchConfig:
    """A laptop budget on real FER2013: about 20 minutes of search on two cores."""
    return SearchConfig(
        name="quick",
        space=SearchSpace(
            archs=(ArchSpace("mini_xception"),), lr=Range(5e-4, 5e-3, log=True), dropout=Range(0.0, 0.3)
        ),
        num_samples=6,
        time_budget_s=20 * 60,
        max_epochs=10,
        grace_period=2,
        top_k=6,
        merge=MergeConfig(time_budget_s=5 * 60),
    )


PRESETS = {"demo": demo_config, "quick": quick_config}


# ---- YAML / dict → typed config, with errors that name the key ------------------------------------------


def _domain(value: Any, where: str) -> Domain:
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(value):
            raise SpecError(
                f"{where}: a range needs low and high (and optional log, step), got {sorted(value)}"
            )
        try:
            return Range(
                float(value["low"]), float(value["high"]), bool(value.get("log", False)), value.get("step")
            )
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where or 'spec'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(
            f"{where or 'spec'}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        hint = hints[key]
        if cls is SearchSpace and key == "archs":
            kwargs[key] = tuple(_arch(a, f"{path}[{i}]") for i, a in enumerate(_as_list(value, path)))
        elif hint is Domain or (isinstance(hint, types.UnionType) and Range in typing.get_args(hint)):
            kwargs[key] = _domain(value, path)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        elif typing.get_origin(hint) is tuple:
            kwargs[key] = tuple(_as_list(value, path))
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except SpecError as e:
        raise SpecError(f"{where + ': ' if where else ''}{e}") from None
    except TypeError as e:
        raise SpecError(f"{where or 'spec'}: {e}") from None


def _as_list(value: Any, where: str) -> list:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str | int | float | dict):
        return [value]
    raise SpecError(f"{where}: expected a list, got {type(value).__name__}")


def _arch(value: Any, where: str) -> ArchSpace:
    if isinstance(value, str):
        return ArchSpace(value)
    if isinstance(value, dict) and len(value) == 1:
        ((name, sub),) = value.items()
        sub = sub or {}
        if not isinstance(sub, dict):
            raise SpecError(f"{where}.{name}: expected a mapping of kwargs to choices or ranges")
        return ArchSpace(name, {k: _domain(v, f"{where}.{name}.{k}") for k, v in sub.items()})
    raise SpecError(f"{where}: an arch is a name or {{name: {{kwarg: choices}}}}, got {value!r}")


def config_from_dict(data: dict, *, base: SearchConfig | None = None) -> SearchConfig:
    """Validate a plain mapping into a SearchConfig; ``preset: quick`` starts from a preset."""
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None and preset not in PRESETS and preset != "papers" and preset != "full":
        raise SpecError(f"preset: unknown {preset!r}; allowed: {', '.join([*PRESETS, 'papers', 'full'])}")
    if preset in ("papers", "full"):
        from search.presets import PAPER_PRESETS

        base = PAPER_PRESETS[preset]()
    elif preset is not None:
        base = PRESETS[preset]()
    cfg = _build(SearchConfig, data, "")
    if base is None:
        return cfg
    merged = {k: getattr(cfg, k) for k in data}
    return base.replace(**merged)


def load_spec(path: str | Path) -> tuple[SearchConfig, dict]:
    """Read a YAML spec → (SearchConfig, extra top-level keys like ``data``)."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"{p}: cannot read YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: expected a mapping at the top level")
    extra = {k: raw.pop(k) for k in ("data", "out") if k in raw}
    try:
        return config_from_dict(raw), extra
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
