"""A portfolio learned from recorded runs: which recipe scored best at which epoch budget, and what a
second net side by side is worth (Auto-PyTorch's portfolio, AutoGluon's zero-shot presets).

``search/spec/portfolio.json`` is data, not code: ``fersearch portfolio build RUN_DIR… RECORDS.json…``
writes it from recorded searches (a run's ``trials.csv``) and recipe races
(``benchmarks/results/recipe_race.json``), ranking recipes by PublicTest only. A budgeted search enqueues
the recipes of the epoch budget nearest to what its trials can afford as its first trials (Optuna's
``enqueue_trial``, through Tune's ``points_to_evaluate``); TPE spends the rest around them. The planner
reads ``width`` to choose between one wide trial and trials side by side (:func:`narrow_is_better`).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The portfolio that ships with fersearch (rebuilt with ``fersearch portfolio build``).
PORTFOLIO_FILE = Path(__file__).with_name("portfolio.json")

#: The hyperparameters a portfolio recipe may set (the quick space's, batch size and the architecture).
RECIPE_KEYS = (
    "arch", "lr", "augment", "augment_kind", "label_smoothing", "batch_size", "weight_decay", "optimizer",
    "schedule",
)  # fmt: skip

#: The architecture of a recipe that names none: every recipe recorded before recipes named theirs (the
#: recipe race's loop and the quick space) trained a mini-Xception.
DEFAULT_ARCH = "mini_xception"


#: Recipes measured within this distance of a trial's epochs on a log scale (a factor of 1.35) count as
#: measured at its budget, and the better one is tried first: 19 and 20 epochs are one budget, 12 and 34 not.
BUDGET_BAND = 0.3


class PortfolioError(ValueError):
    """A portfolio file or a source for one that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Recipe:
    """One recipe and how it scored: ``epochs`` trained, PublicTest accuracy, where it was measured."""

    params: dict
    epochs: float
    public_acc: float
    source: str = ""

    @property
    def arch(self) -> str:
        return self.params.get("arch", DEFAULT_ARCH)


@dataclass(frozen=True)
class WidthValue:
    """What the width decision weighs (accuracy in points as a function of epochs E is modelled as
    ``A - epoch_cost / E``; an ensemble of two independent nets adds ``second_net_gain`` points at equal
    epochs). Fitted from a race's plain loop and its pair of side-by-side loops, PublicTest only."""

    epoch_cost: float
    second_net_gain: float
    source: str = ""


@dataclass(frozen=True)
class Portfolio:
    recipes: tuple[Recipe, ...]
    width: WidthValue
    built_from: tuple[str, ...] = field(default_factory=tuple)

    # ---- reading and writing: the one place portfolio.json is parsed ----------------------------------

    @classmethod
    def read(cls, path: str | Path = PORTFOLIO_FILE) -> Portfolio:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            recipes = tuple(
                Recipe(
                    params=_checked_params(r["params"], f"{path}: recipes[{i}].params"),
                    epochs=float(r["epochs"]),
                    public_acc=float(r["public_acc"]),
                    source=str(r.get("source", "")),
                )
                for i, r in enumerate(raw["recipes"])
            )
            w = raw["width"]
            width = WidthValue(float(w["epoch_cost"]), float(w["second_net_gain"]), str(w.get("source", "")))
        except OSError as e:
            raise PortfolioError(f"{path}: cannot read ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise PortfolioError(f"{path}: not JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
        except KeyError as e:
            raise PortfolioError(f"{path}: missing key {e.args[0]!r}") from None
        except PortfolioError:
            raise
        except (TypeError, ValueError) as e:
            raise PortfolioError(f"{path}: {e}") from None
        return cls(recipes, width, tuple(raw.get("built_from", ())))

    def write(self, path: str | Path = PORTFOLIO_FILE) -> Path:
        path = Path(path)
        d = {
            "about": "built by `fersearch portfolio build`; recipes ranked by PublicTest at their epochs",
            "built_from": list(self.built_from),
            "width": asdict(self.width),
            "recipes": [asdict(r) for r in sorted(self.recipes, key=lambda r: (r.epochs, -r.public_acc))],
        }
        path.write_text(json.dumps(d, indent=2) + "\n")
        return path

    # ---- use -------------------------------------------------------------------------------------------

    def points(self, epochs: float, k: int, archs: Sequence[str] | None = None) -> tuple[dict, ...]:
        """The ``k`` recipes to try first for trials that can afford ``epochs`` epochs: the best by
        PublicTest among those measured at about that budget (within :data:`BUDGET_BAND` on a log scale),
        then the next bands' best, no recipe twice. Fewer than ``k`` when the portfolio holds fewer distinct
        ones. Each names its architecture.

        ``archs`` (the space's): only their recipes, and with several, one architecture per trial before
        any twice, in the order of each one's best-ranked recipe, so trials side by side differ in
        net as well as seed. Nets of another size train at another pace, so an architecture's recipes are
        ranked among themselves (recipe race at 10 min on 2 cores, 2447ae1: a mini-Xception and a VGG-FER
        side by side scored as a pair 61.3 PublicTest on average over four seed pairs, two mini-Xceptions
        61.2; PrivateTest 62.8 against 62.2)."""

        def rank(r: Recipe) -> tuple:
            distance = abs(math.log(max(r.epochs, 1e-6) / max(epochs, 1e-6)))
            return math.floor(distance / BUDGET_BAND), -r.public_acc

        ranked = sorted(self.recipes, key=rank)
        if archs is not None:
            per_arch: dict[str, list[Recipe]] = {}
            for r in ranked:
                if r.arch in archs:
                    per_arch.setdefault(r.arch, []).append(r)
            rounds = itertools.zip_longest(*per_arch.values())
            ranked = [r for group in rounds for r in group if r is not None]
        out: list[dict] = []
        for r in ranked:
            params = {"arch": r.arch, **r.params}
            if params not in out:
                out.append(params)
            if len(out) == k:
                break
        return tuple(out)


def _checked_params(params: dict, where: str) -> dict:
    if not isinstance(params, dict):
        raise PortfolioError(f"{where}: expected a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(RECIPE_KEYS))
    if unknown:
        raise PortfolioError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(RECIPE_KEYS)}"
        )
    return {"arch": DEFAULT_ARCH, **params}


def narrow_is_better(*, wide_epochs: float, narrow_epochs: float, width: WidthValue) -> bool:
    """Two trials side by side, each training ``narrow_epochs``, against one trial on all their CPUs
    training ``wide_epochs`` in the same time: side by side wins when the second net's worth outweighs what
    the fewer epochs cost, ``epoch_cost * (1/narrow - 1/wide)`` points."""
    if narrow_epochs <= 0:
        return False
    lost = width.epoch_cost * (1 / narrow_epochs - 1 / max(wide_epochs, 1e-6))
    return width.second_net_gain >= lost


def width_value(*, loop_epochs: float, loop_acc: float, pair_epochs: float, pair_alone_acc: float,
                pair_acc: float, source: str = "") -> WidthValue:  # fmt: skip
    """Fit :class:`WidthValue` (points) from one race: the plain loop (``loop_epochs``, ``loop_acc``), the
    members of the side-by-side pair alone (mean epochs and accuracy) and their plain average."""
    gap = 1 / pair_epochs - 1 / loop_epochs
    cost = 100 * (loop_acc - pair_alone_acc) / gap if gap > 0 else 0.0
    return WidthValue(round(max(0.0, cost), 2), round(100 * (pair_acc - pair_alone_acc), 3), source)


# ---- building a portfolio from recorded runs ------------------------------------------------------------


def recipes_from_run(run_dir: str | Path) -> list[Recipe]:
    """The trials of a recorded search (``trials.csv``) that finished and learned, as recipes at the
    epochs they trained."""
    path = Path(run_dir) / "trials.csv"
    if not path.is_file():
        raise PortfolioError(f"{path}: missing; {run_dir} is not a fersearch search directory")
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("error") or not row.get("val_acc") or not row.get("epochs"):
                continue
            params = {k: _number(row[k]) for k in RECIPE_KEYS if row.get(k) not in (None, "")}
            out.append(
                Recipe(params, float(row["epochs"]), float(row["val_acc"]), f"{run_dir}:{row['trial_id']}")
            )
    return out


def recipes_from_race(records: str | Path) -> tuple[list[Recipe], list[WidthValue]]:
    """Recipes from recipe-race records (``benchmarks/recipe_race.json``) and width values from
    budget-race records that carry their PublicTest parts."""
    path = Path(records)
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PortfolioError(f"{path}: cannot read race records ({e})") from None
    recipes, widths = [], []
    for i, r in enumerate(rows if isinstance(rows, list) else []):
        try:
            recipe, width = _race_row(r, f"{path}[{i}]")
        except (KeyError, TypeError, ValueError) as e:
            raise PortfolioError(f"{path}: record {i}: bad or missing {e}") from None
        recipes += [recipe] if recipe else []
        widths += [width] if width else []
    return recipes, widths


def _race_row(r: dict, where: str) -> tuple[Recipe | None, WidthValue | None]:
    if "augment" in r and "public_acc" in r:
        # the loop's flip + shift is the trials' ``shift`` kind at strength 1 (4 pixels)
        kind, augment = ("shift", 1.0) if r["augment"] == "shift" else ("affine", float(r["augment"]))
        params = {"arch": r.get("arch", DEFAULT_ARCH), "lr": float(r["lr"]), "augment": augment,
                  "augment_kind": kind, "label_smoothing": float(r["smoothing"]),
                  "batch_size": int(r["batch_size"])}  # fmt: skip
        return Recipe(params, float(r["epochs"]), float(r["public_acc"]), where), None
    if isinstance(r.get("run_width_value") or r.get("width_value"), dict):
        # measured inside fersearch (wide run against narrow run, snapshots and TTA included) when the
        # race has it, else from the hand-written loop and pair
        w = r.get("run_width_value") or r["width_value"]
        return None, WidthValue(float(w["epoch_cost"]), float(w["second_net_gain"]), where)
    return None, None


def build_portfolio(sources: Sequence[str | Path], base: Portfolio | None = None) -> Portfolio:
    """A portfolio from run directories and race-record files, added to ``base``'s recipes (what earlier
    builds learned stays when their run directories are gone); the width value is the mean of every
    race's (``base``'s when none carries one). Recipes measured in several places are all kept: the nearest
    epoch budget and the best PublicTest decide at use."""
    recipes: list[Recipe] = list(base.recipes) if base is not None else []
    widths: list[WidthValue] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            recipes += recipes_from_run(p)
        elif p.is_file():
            r, w = recipes_from_race(p)
            recipes += r
            widths += w
        else:
            raise PortfolioError(f"{p}: no such run directory or race-record file")
    if len(recipes) == (len(base.recipes) if base is not None else 0):
        raise PortfolioError(f"no finished trial or recipe in {', '.join(map(str, sources))}")
    if widths:
        width = WidthValue(
            round(sum(w.epoch_cost for w in widths) / len(widths), 2),
            round(sum(w.second_net_gain for w in widths) / len(widths), 3),
            ", ".join(w.source for w in widths),
        )
    elif base is not None:
        width = base.width
    else:
        raise PortfolioError(
            "no budget-race record with a width value and no base portfolio to keep one from"
        )
    built_from = (*(base.built_from if base is not None else ()), *(str(s) for s in sources))
    return Portfolio(tuple(_best_per_budget(recipes)), width, tuple(dict.fromkeys(built_from)))


def _best_per_budget(recipes: Iterable[Recipe]) -> list[Recipe]:
    """One entry per distinct recipe and epoch budget (rounded), the best score of repeats kept."""
    best: dict[tuple, Recipe] = {}
    for r in recipes:
        key = (json.dumps(r.params, sort_keys=True), round(r.epochs))
        if key not in best or r.public_acc > best[key].public_acc:
            best[key] = r
    return list(best.values())


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
