"""The search stage as a service: prepare data → Tune search (or resume) → trials table, Pareto front, W&B.

Everything lives under one directory; ``search.json`` records the config and data so ``--resume`` needs
nothing but the directory.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_pipeline.fer2013 import PreparedData, load_split
from data_pipeline.prepare import prepare_fer2013
from search.spec import (
    PORTFOLIO_FILE,
    Portfolio,
    SearchConfig,
    WidthValue,
    config_from_dict,
    narrow_is_better,
)
from search.trial import (
    CONFUSION_FILE,
    SearchPlan,
    TrialData,
    choose_precision,
    measure_images_per_s,
    plan_search,
    selection_reserve_s,
)
from search.tuning.tuner import MODES, SearchFailed, TrialRecord, run_search, trial_slots

SPEC_FILE = "search.json"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class SearchRun:
    out_dir: Path
    cfg: SearchConfig
    prepared: PreparedData
    trials: list[TrialRecord]


def init_ray(address: str | None = None) -> None:
    """A local Ray instance by default; ``address`` (``auto``, ``host:6379``, ``ray://host:10001``) joins a
    running cluster, where local-start options such as the dashboard flag are not allowed."""
    import ray

    from search.tuning.progress import mode

    if ray.is_initialized():
        return
    # the trials' own prints reach the terminal only with --verbose (else Ray's session logs keep them)
    to_driver = mode() == "verbose"
    if address:
        ray.init(address=address, log_to_driver=to_driver)
    else:
        # Ray configures its own terminal logging only with --verbose; else route_logs' file keeps it
        ray.init(include_dashboard=False, configure_logging=to_driver, logging_level="WARNING",
                 log_to_driver=to_driver)  # fmt: skip


def prepare_variants(
    data_path: str | Path, out: Path, variants: Sequence[str], per_class: int = 8000
) -> dict[str, PreparedData]:
    """*original* in ``out/data`` (what ensembles and reports read), every other variant the space names
    in ``out/variants/<name>``, built from that same original (cached by content); ``per_class``: training
    images per class of the balanced variants (paper 004: 8000)."""
    from data_pipeline.config import PrepareConfig, SourceConfig, VariantConfig
    from data_pipeline.prepare import prepare

    prepared = {"original": prepare_fer2013(data_path, out / "data")}
    for name in variants:
        if name != "original":
            variant = VariantConfig(name, per_class=per_class)
            cfg = PrepareConfig(SourceConfig("fer2013", Path(data_path)), variant=variant)
            prepared[name] = prepare(cfg, out / "variants", original_root=out / "data")
            counts = prepared[name].manifest.counts["Training"]
            print(f"data variant {name}: {sum(counts.values())} training images → {prepared[name].root}")
    return prepared


def load_trial_data(prepared: PreparedData | dict[str, PreparedData]) -> TrialData:
    """Training arrays per variant, PublicTest with labels, PrivateTest images only (from *original*:
    every variant shares its validation and test splits)."""
    by_variant = prepared if isinstance(prepared, dict) else {"original": prepared}
    train = {name: load_split(p.root, "Training") for name, p in by_variant.items()}
    prepared = by_variant["original"]
    val_x, val_y = load_split(prepared.root, "PublicTest")
    test_x, _ = load_split(prepared.root, "PrivateTest", with_labels=False)
    classes = prepared.classes
    return TrialData(train=train, val_x=val_x, val_y=val_y, test_x=test_x, classes=classes)


def search(
    cfg: SearchConfig,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    deadline: float | None = None,
) -> SearchRun:
    """Prepare the data and run the search. With ``cfg.run_budget_s`` the search is planned to end so that
    what follows it still fits before ``deadline`` (``time.time()`` seconds; default: now + the budget)."""
    started = time.time()
    if cfg.run_budget_s and deadline is None:
        deadline = started + cfg.run_budget_s
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        spec = {"config": cfg.to_dict(), "data": str(Path(data_path).resolve())}
        (out / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    init_ray()
    print(f"preparing {data_path} → {out / 'data'}")
    by_variant = prepare_variants(data_path, out, _variants(cfg), cfg.balanced_per_class)
    prepared = by_variant["original"]
    data = load_trial_data(by_variant)
    plan = None
    budgeted = bool(cfg.run_budget_s and deadline is not None and not resume)
    if budgeted or cfg.precision == "auto":
        cfg, images_per_s = training_pace(cfg)
    if budgeted:
        cfg, images_per_s = trial_width(cfg, images_per_s, data, deadline)
    if budgeted:
        plan = budget_plan(cfg, data, deadline, images_per_s)
        (out / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=2) + "\n")
        print(plan.describe())
    if cfg.portfolio and not resume:
        cfg = with_portfolio(cfg, plan)
    if not budgeted:
        budget = f"{cfg.time_budget_s:.0f}s" if cfg.time_budget_s else "none"
        verb = "resuming" if resume else "searching"
        print(
            f"{verb}: {cfg.num_samples} trials, ≤{cfg.max_epochs} epochs, time budget {budget}, storage {out}"
        )
    trials = run_search(cfg, data, out, resume=resume, plan=plan)
    rows = write_trials_table(trials, out / "trials.csv")
    images = {}
    if cfg.multi_objective:
        front = write_pareto(rows, cfg.objectives, out)
        images["pareto_front"] = out / "pareto.png"
        print(f"Pareto front ({' vs '.join(cfg.objectives)}): {len(front)} trials → {out / 'pareto.csv'}")
    best = next((t for t in trials if t.usable), None)
    if best is None:
        raise SearchFailed.of(trials, out)
    if (best.checkpoint / CONFUSION_FILE).is_file():
        images["confusion_best_trial"] = plot_confusion(
            np.load(best.checkpoint / CONFUSION_FILE), data.classes, out / "confusion_best_trial.png"
        )
    if cfg.wandb != "off":
        from search.tracking import log_summary

        log_summary(cfg, out, rows, images)
    return SearchRun(out, cfg, prepared, trials)


def portfolio_of(cfg: SearchConfig) -> Portfolio:
    """The portfolio a config names: its own file, else the one fersearch ships."""
    return Portfolio.read(cfg.portfolio if isinstance(cfg.portfolio, str) else PORTFOLIO_FILE)


def with_portfolio(
    cfg: SearchConfig, plan: SearchPlan | None, portfolio: Portfolio | None = None
) -> SearchConfig:
    """``cfg`` whose first trials are the portfolio's best recipes at the epochs each trial can afford
    (the plan's estimate, else ``max_epochs``), one per trial of the first round: each side-by-side trial a
    different recipe (and, as every trial, its own seed), so the first ensemble's members differ."""
    portfolio = portfolio or portfolio_of(cfg)
    epochs = plan.est_epochs_per_trial if plan is not None else cfg.max_epochs
    first = plan.slots if plan is not None else min(cfg.num_samples, trial_slots(cfg) or 1)
    # the parameters this space searches: a recipe's value for one the space fixes is the space's to set
    space = {"arch", *(k for k, v in vars(cfg.space).items() if k != "archs" and not _fixed(v))}
    points = tuple(
        {k: v for k, v in p.items() if k in space}
        for p in portfolio.points(epochs, max(1, first), archs=[a.name for a in cfg.space.archs])
    )
    shown = "; ".join(", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items())
                      for p in points)  # fmt: skip
    print(f"portfolio: the first {len(points)} trial(s) at ~{epochs} epochs each: {shown}")
    return cfg.replace(points_to_evaluate=points)


def _fixed(domain) -> bool:
    return isinstance(domain, tuple) and len(domain) == 1


def pace_probe(cfg: SearchConfig) -> tuple[str, dict, int]:
    """What pace is measured on: the space's first architecture, its first kwargs, its smallest batch."""
    arch = cfg.space.archs[0]
    kwargs = {k: (v[0] if isinstance(v, tuple) else v.low) for k, v in arch.kwargs.items()}
    batch = cfg.space.batch_size
    return arch.name, kwargs, int(batch[0] if isinstance(batch, tuple) else batch.low)


def training_pace(cfg: SearchConfig) -> tuple[SearchConfig, float]:
    """One trial's training images/s on this machine for the space's first architecture, on a trial's
    threads, and ``cfg`` with ``precision: auto`` settled to the faster of fp32 and bf16 (measured: bf16
    autocast is +20% on a CPU with bfloat16 instructions, 17x slower on an AVX2-only one)."""
    arch, kwargs, batch = pace_probe(cfg)
    threads = int(cfg.resources.cpu)
    if cfg.precision != "auto":
        return cfg, measure_images_per_s(arch, kwargs, threads, batch, precision=cfg.precision)
    precision, images_per_s = choose_precision(arch, kwargs, threads, batch)
    print(f"precision auto: {precision} ({images_per_s:.0f} img/s per trial; the faster here)")
    return cfg.replace(precision=precision), images_per_s


def threads_per_trial(
    side_by_side: float, wide: float, slots: int, cpu: float, *, search_s: float, train_images: int,
    width: WidthValue,
) -> float:  # fmt: skip
    """``cpu`` (narrow trials, ``slots`` at a time) when their ensemble is worth more than one trial on
    all ``slots * cpu`` threads, else all of them. Each pace (images/s per trial) becomes the epochs it
    trains in ``search_s``, and :func:`narrow_is_better` weighs what the fewer epochs cost against what a
    second independent net adds (the portfolio's ``width``, fitted from budget races). The threshold it
    replaces (side by side kept at >= 0.8 of the wide pace) ran one wide trial at 0.70-0.74 in the 20-min
    race at b4b550b, where the hand-written pair at 0.81 beat the wide loop by a point."""
    narrow = narrow_is_better(
        wide_epochs=search_s * wide / max(1, train_images),
        narrow_epochs=search_s * side_by_side / max(1, train_images),
        width=width,
    )
    return cpu if narrow else slots * cpu


#: Images the width probe trains on: real Training images in a shuffled order, as epochs read them.
PROBE_IMAGES = 4096


def trial_width(
    cfg: SearchConfig, images_per_s: float, data: TrialData, deadline: float
) -> tuple[SearchConfig, float]:
    """For a budgeted search on one CPU node: time the trials side by side as they would run (one Ray task
    per slot, at once, on real Training images) and one trial on every CPU, and keep the width whose
    ensemble is worth more in the time left (:func:`threads_per_trial`); returns the config
    (``resources.cpu``) and that trial's images/s."""
    import dataclasses

    import ray

    slots = trial_slots(cfg) or 1
    nodes = [n for n in ray.nodes() if n.get("Alive")] if ray.is_initialized() else []
    if slots < 2 or len(nodes) != 1 or cfg.resources.gpu > 0 or cfg.workers_per_trial > 1:
        return cfg, images_per_s
    arch, kwargs, batch = pace_probe(cfg)
    threads = int(cfg.resources.cpu)
    x, y = data.train["original"]
    pick = np.random.default_rng(0).permutation(len(x))[:PROBE_IMAGES]
    images = ray.put((x[pick], y[pick]))
    # both timed in Ray workers, where trials run: the wide trial alone, then the narrow ones at once
    probe = {"seconds": 6.0, "precision": cfg.precision}
    wide_task = ray.remote(num_cpus=slots * cfg.resources.cpu)(measure_images_per_s)
    wide = float(ray.get(wide_task.remote(arch, kwargs, int(slots * threads), batch, images=images, **probe)))
    pace = ray.remote(num_cpus=cfg.resources.cpu)(measure_images_per_s)
    warm = {"seconds": 0.0, "warmup": 1, "min_steps": 1}  # every worker started first: the timed runs overlap
    ray.get([pace.remote(arch, kwargs, threads, batch, **warm) for _ in range(slots)])
    side_by_side = float(
        np.mean(
            ray.get([pace.remote(arch, kwargs, threads, batch, images=images, **probe) for _ in range(slots)])
        )
    )
    width = portfolio_of(cfg).width
    search_s = max(60.0, deadline - time.time() - 60.0)
    cpu = threads_per_trial(
        side_by_side, wide, slots, cfg.resources.cpu, search_s=search_s, train_images=len(x), width=width
    )
    narrow = cpu == cfg.resources.cpu
    choice = f"{slots} trials at a time" if narrow else "one trial at a time on every CPU"
    n = len(x)
    print(
        f"trial width: {side_by_side:.0f} img/s per trial with {slots} side by side "
        f"(~{search_s * side_by_side / n:.0f} epochs each), {wide:.0f} for one on "
        f"{int(slots * threads)} threads "
        f"(~{search_s * wide / n:.0f} epochs); a second net is worth {width.second_net_gain:.1f} points, "
        f"fewer epochs cost {width.epoch_cost:.0f}/E points → {choice}"
    )
    if narrow:
        return cfg, side_by_side
    return cfg.replace(resources=dataclasses.replace(cfg.resources, cpu=float(cpu))), wide


def budget_plan(cfg: SearchConfig, data: TrialData, deadline: float, images_per_s: float) -> SearchPlan:
    """Plan the search so the run ends by ``deadline``: ``images_per_s`` is one trial's measured training
    pace (:func:`training_pace`), then the trial slots of the cluster and the time the stages after the
    search will need."""
    slots = trial_slots(cfg) or 1
    n_train = len(data.train["original"][0])
    now = time.time()
    budget = float(cfg.run_budget_s or 0)
    rough = plan_search(
        budget_s=budget, elapsed_s=budget - (deadline - now), slots=slots, images_per_s=images_per_s,
        train_images=n_train, eval_images=len(data.val_x), min_epochs=cfg.min_epochs_per_trial,
        reserve_s=0, cycles=cfg.cycles, now=now,
    )  # fmt: skip
    # candidates per trial: every cycle end, and the late epochs' successive bests (two on average: the
    # 20-min race at ad3c315 had one trial of one cycle give three, @28 @30 @34, where cycles + 1 counted
    # two, and selection took 103 s of the 65 kept)
    reserve = selection_reserve_s(rough.trials * (rough.cycles + 2), len(data.val_x) + len(data.test_x))
    return plan_search(
        budget_s=budget, elapsed_s=budget - (deadline - now), slots=slots, images_per_s=images_per_s,
        train_images=n_train, eval_images=len(data.val_x), min_epochs=cfg.min_epochs_per_trial,
        reserve_s=reserve, cycles=cfg.cycles, now=now, precision=cfg.precision, threads=cfg.resources.cpu,
    )  # fmt: skip


def resume(out_dir: str | Path) -> SearchRun:
    """Finish an interrupted search: finished trials are kept, the rest of the budget runs."""
    out = Path(out_dir).resolve()
    spec_path = out / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: missing; {out} is not a fersearch search directory")
    spec = json.loads(spec_path.read_text())
    return search(config_from_dict(spec["config"]), spec["data"], out, resume=True)


def search_config(out_dir: str | Path) -> SearchConfig:
    """The config a search directory ran with (``search.json``); defaults for a directory without one."""
    spec_path = Path(out_dir) / SPEC_FILE
    if not spec_path.is_file():
        return SearchConfig()
    return config_from_dict(json.loads(spec_path.read_text())["config"])


def _variants(cfg: SearchConfig) -> tuple[str, ...]:
    dom = cfg.space.variant
    return tuple(dom) if isinstance(dom, tuple) else ("original",)


def trial_row(t: TrialRecord) -> dict:
    row = {
        "trial_id": t.trial_id,
        "status": t.status,
        "arch": t.arch,
        **(t.hparams or {"lr": t.lr, "dropout": t.dropout}),
        **{f"arch.{k}": v for k, v in t.arch_kwargs.items()},
        "val_acc": t.val_acc,
        "best_epoch": t.best_epoch,
        "epochs": t.epochs,
        "error": t.error or "",
    }
    for key in ("val_macro_f1", "params", "latency_ms", "train_images_per_s"):
        if t.metrics and key in t.metrics:
            row[key] = t.metrics[key]
    if t.error:
        row["error"] = t.error
    return row


def write_trials_table(trials: Sequence[TrialRecord], path: Path) -> list[dict]:
    rows = [trial_row(t) for t in trials]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return rows


def pareto_front(rows: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    """Rows no other row beats on every objective (val_acc up, latency/params down)."""
    sign = {o: 1.0 if MODES[o] == "max" else -1.0 for o in objectives}
    ok = [r for r in rows if all(isinstance(r.get(o), int | float) for o in objectives) and r["val_acc"] >= 0]

    def dominates(a: dict, b: dict) -> bool:
        ge = all(sign[o] * a[o] >= sign[o] * b[o] for o in objectives)
        return ge and any(sign[o] * a[o] > sign[o] * b[o] for o in objectives)

    return [r for r in ok if not any(dominates(o, r) for o in ok if o is not r)]


def write_pareto(rows: Sequence[dict], objectives: Sequence[str], out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted(pareto_front(rows, objectives), key=lambda r: r[objectives[1]])
    with open(out / "pareto.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["trial_id", "arch", *objectives])
        w.writeheader()
        w.writerows({k: r.get(k) for k in ["trial_id", "arch", *objectives]} for r in front)
    x_key = objectives[1]
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in rows if isinstance(r.get(x_key), int | float) and r["val_acc"] >= 0]
    ax.scatter([r[x_key] for r in pts], [r["val_acc"] for r in pts], c="0.6", label="trials")
    ax.plot([r[x_key] for r in front], [r["val_acc"] for r in front], "o-", c="C3", label="Pareto front")
    ax.set_xlabel(x_key)
    ax.set_ylabel("PublicTest accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=100)
    plt.close(fig)
    return front


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, split: str = "PublicTest") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel(f"true ({split})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_trials(out_dir: str | Path) -> list[dict]:
    """The trials of a search directory, read without Ray: ``trials.csv`` once the search has ended,
    else each trial's latest Tune result (a search still running, or interrupted)."""
    out = Path(out_dir)
    path = out / "trials.csv"
    if path.is_file():
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    rows = []
    for trial_dir in sorted((out / "tune").glob("trial_*")):
        params = (
            json.loads((trial_dir / "params.json").read_text())
            if (trial_dir / "params.json").is_file()
            else {}
        )
        lines = (
            (trial_dir / "result.json").read_text().splitlines()
            if (trial_dir / "result.json").is_file()
            else []
        )
        last = json.loads(lines[-1]) if lines else {}
        best = max((json.loads(ln).get("val_acc", -1) for ln in lines), default=-1)
        status = (
            "error" if (trial_dir / "error.txt").is_file() else ("done" if last.get("done") else "running")
        )
        keep = ("arch", "lr", "dropout", "optimizer", "batch_size", "schedule")
        rows.append(
            {
                "trial_id": trial_dir.name.removeprefix("trial_"),
                "status": status,
                **{k: params[k] for k in keep if k in params},
                "val_acc": best,
                "epochs": last.get("epoch", 0),
            }
        )
    if not rows:
        raise FileNotFoundError(f"{out}: no trials.csv and no Tune trials under {out / 'tune'}")
    return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]
