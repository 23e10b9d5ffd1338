"""The budget race: at equal wall time on real FER2013, does `fersearch run` beat what a user writes by hand?

Per budget M (minutes), one after the other on the same machine:

1. **baseline** — the plain loop of ``benchmarks/single_model_baseline.py`` (one mini_xception, Adam 2e-3,
   cosine over M minutes, flip + shift, all threads);
2. **pair_tta** — two such loops side by side, one thread each, each keeping its best PublicTest epoch,
   their average with flip TTA;
3. **fersearch** — ``fersearch run --budget-min M``: data preparation, search, selection and export all
   inside M (its wall time is the subprocess's, interpreter start included).

and **first_trial** — the portfolio's first recipe as one trial on every thread, scored by its best
snapshot alone (no TTA, no ensemble): recipe parity with the plain loop, measured. When the planner's own
run (leg 3) was that one wide trial, the leg is read from it; else it is a run of its own
(``fersearch run --budget-min M --cpus-per-trial CORES``). ``--legs`` picks legs (default all).

Prints the PrivateTest accuracies with bootstrap 95% intervals, the difference in points, and what
each used; writes the records to ``benchmarks/results/budget_race.json`` (one per budget, replaced by a
new run at the same budget). PrivateTest labels are read only for the final table.

    python -m benchmarks.budget_race --data ../shared/data/fer2013.csv.gz --minutes 20 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.machine import load, machine_info
from data_pipeline import DataManifest
from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013
from search.ensemble import bootstrap_ci
from search.spec import width_value

RESULTS = Path(__file__).parent / "results" / "budget_race.json"


def _baseline(root: Path, minutes: float, work: Path, name: str, threads: int, seed: int, best: bool):
    out = work / name
    cmd = [sys.executable, "-m", "benchmarks.single_model_baseline", "--data-root", str(root), "--minutes",
           str(minutes), "--threads", str(threads), "--seed", str(seed), "--save", str(out)]  # fmt: skip
    if best:
        cmd.append("--best-epoch")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL), out


def _loaded(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    info = json.loads((out / "result.json").read_text())
    probs = {f.stem: np.load(f) for f in out.glob("*.npy")}
    return info, probs


def _score(probs: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[float, float]]:
    correct = (probs.argmax(1) == labels).astype(np.float64)
    return float(correct.mean()), bootstrap_ci(correct)


LEGS = ("baseline", "pair_tta", "first_trial", "fersearch")


def _fersearch(data: Path, minutes: float, work: Path, name: str, extra: list[str]) -> dict:
    """``fersearch run --budget-min M`` (``extra``: flags of the leg) in a subprocess, its wall time the
    subprocess's; what the planner chose (plan.json) and the run's summary."""
    run_dir = work / name
    t = time.time()
    with open(work / f"{name}.log", "w") as log:
        subprocess.run(
            [sys.executable, "-m", "search.cli", "run", "--data", str(data), "--budget-min", str(minutes),
             "--out", str(run_dir), *extra],
            check=True, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wall = time.time() - t
    summary = json.loads((run_dir / "summary.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}
    return {"wall_s": round(wall, 1), "summary": summary, "run_dir": str(run_dir),
            "planner": {k: plan.get(k) for k in ("precision", "threads_per_trial", "slots", "trials",
                                                  "est_epochs_per_trial", "images_per_s")}}  # fmt: skip


def _row(summary: dict, strategy: str, tta: bool) -> dict:
    return next(r for r in summary["comparison"] if (r["strategy"], r["tta"]) == (strategy, tta))


def _run_figures(s: dict, single: bool) -> dict:
    """A fersearch leg's figures from its summary (PublicTest only): the exported ensemble's row, or with
    ``single`` its best snapshot alone, no TTA; the run's own rows say where the points went."""
    ens = s["ensemble"]
    row = _row(s, "best single", False) if single else _row(s, ens["strategy"], ens["tta"])
    return {
        "public_acc": row["public_acc"],
        "trials": len(s["trials"]),
        "epochs": [t.get("epochs") for t in s["trials"]],
        "params": [
            {k: t.get(k) for k in ("lr", "augment", "augment_kind", "label_smoothing", "batch_size")}
            for t in s["trials"]
        ],
        "candidates": s.get("candidates", len(row["members"])),
        "members": row["members"],
        "strategy": row["strategy"],
        "tta": row["tta"],
        "row": [row["strategy"], row["tta"]],
        "rows": {f"{r['strategy']}{' + TTA' if r['tta'] else ''}": r["public_acc"] for r in s["comparison"]},
    }


def one_wide_trial(leg: dict | None, cores: int) -> bool:
    """Whether a fersearch leg ran a single trial on every thread: then it *is* the first-trial leg's run."""
    if not leg:
        return False
    planner = leg.get("planner") or {}
    return leg.get("trials") == 1 and float(planner.get("threads_per_trial") or 0) >= cores


def first_trial_of(leg: dict) -> dict:
    """The first-trial leg read from a fersearch leg of one wide trial: its best snapshot alone, no TTA."""
    s = json.loads((Path(leg["run_dir"]) / "summary.json").read_text())
    keep = ("wall_s", "run_dir", "planner", "load_before")
    return {**{k: leg[k] for k in keep if k in leg}, **_run_figures(s, single=True), "from": "fersearch"}


def race(data: Path, minutes: float, work: Path, legs=LEGS, save=None, kept: dict | None = None) -> dict:
    """The legs in order on this machine; after each, ``save(record)`` is called with what is known so far
    (PublicTest figures, wall, load): a leg's result is kept even if a later one fails. ``kept``: an earlier
    record of this budget on this CPU whose other legs stay (``--keep``). PrivateTest labels are read once,
    after every leg, for the final table (:func:`final_table`)."""
    root = work / "data"
    if DataManifest.try_read(root) is None:
        prepare_fer2013(data, root)
        import ray

        ray.shutdown()  # the preparation's Ray would idle beside every leg
    _, val_y = load_split(root, "PublicTest")
    machine = machine_info()
    rec: dict = {"minutes": minutes, **machine, "legs": list(legs), "started": time.strftime("%F %T")}
    if kept and kept.get("cpu") == machine["cpu"]:
        old = [leg for leg in LEGS if leg in kept and leg not in legs]
        rec.update({leg: kept[leg] for leg in old}, legs=[*old, *legs], kept_from=kept.get("commit"))
        if "width_value" in kept and "pair_tta" in old:
            rec["width_value"] = kept["width_value"]
    save = save or (lambda r: None)

    if "baseline" in legs:
        print(f"[{minutes:g} min] baseline: one loop on all threads", flush=True)
        before, t = load(), time.time()
        proc, out = _baseline(root, minutes, work, "baseline", os.cpu_count() or 2, 0, best=False)
        proc.wait()
        info, _ = _loaded(out)
        rec["baseline"] = {"public_acc": info["public_acc"], "wall_s": round(time.time() - t, 1),
                           "epochs": info["epochs"], "load_before": before, "out": str(out),
                           "commit": machine["commit"]}  # fmt: skip
        save(rec)

    if "pair_tta" in legs:
        print(f"[{minutes:g} min] pair: two loops side by side, one thread each", flush=True)
        before, t = load(), time.time()
        procs = [_baseline(root, minutes, work, f"pair_{i}", 1, i, best=True) for i in range(2)]
        for p, _ in procs:
            p.wait()
        pair = [_loaded(out) for _, out in procs]
        tta = sum(p["PublicTest"] + p["PublicTest_flip"] for _, p in pair) / 4
        plain = sum(p["PublicTest"] for _, p in pair) / 2
        rec["pair_tta"] = {
            "public_acc": float(np.mean(tta.argmax(1) == val_y)),
            "plain_public_acc": float(np.mean(plain.argmax(1) == val_y)),
            "alone_public_acc": [info["public_acc"] for info, _ in pair],
            "wall_s": round(time.time() - t, 1), "epochs": [info["epochs"] for info, _ in pair],
            "chosen_epochs": [info["chosen_epochs"] for info, _ in pair], "load_before": before,
            "outs": [str(out) for _, out in procs], "commit": machine["commit"],
        }  # fmt: skip
        if "baseline" in rec:  # what a second net is worth at the pair's pace, PublicTest only
            b, pr = rec["baseline"], rec["pair_tta"]
            rec["width_value"] = asdict(width_value(
                loop_epochs=b["epochs"], loop_acc=b["public_acc"], pair_epochs=float(np.mean(pr["epochs"])),
                pair_alone_acc=float(np.mean(pr["alone_public_acc"])), pair_acc=pr["plain_public_acc"],
                source=f"budget race {minutes:g} min at {rec['commit']}",
            ))  # fmt: skip
            rec["width_value"]["pace_share"] = round(float(np.mean(pr["epochs"])) / b["epochs"], 3)
        save(rec)

    # the planner's own run first: when it ran one trial on every thread, that trial alone (its best
    # snapshot, no TTA) is the first-trial leg, and the budget is not spent twice on the same run
    for leg, extra in (("fersearch", []), ("first_trial", ["--cpus-per-trial", str(machine["cores"])])):
        if leg not in legs:
            continue
        if leg == "first_trial" and one_wide_trial(rec.get("fersearch"), machine["cores"]):
            rec[leg] = first_trial_of(rec["fersearch"])
            print(f"[{minutes:g} min] first_trial: the fersearch leg's one wide trial, alone", flush=True)
            save(rec)
            continue
        print(
            f"[{minutes:g} min] {leg}: fersearch run --budget-min {minutes:g} {' '.join(extra)}", flush=True
        )
        before = load()
        got = _fersearch(data, minutes, work, leg, extra)
        s = got.pop("summary")
        rec[leg] = {**got, **_run_figures(s, single=leg == "first_trial"), "load_before": before}
        save(rec)

    run_width(rec)
    final_table(rec, root, val_y)
    save(rec)
    return rec


def run_width(rec: dict) -> None:
    """What a second net was worth inside fersearch itself: the first-trial leg is the wide run (one trial
    on every thread, its snapshots and TTA exported), the fersearch leg the narrow one when the planner ran
    trials side by side. Their exported PublicTest accuracies, with the epoch cost fitted from the hand legs,
    give the second net's worth on top of snapshots and TTA (``run_width_value``, which
    ``fersearch portfolio build`` prefers to the hand legs' ``width_value``)."""
    wide, narrow, hand = rec.get("first_trial"), rec.get("fersearch"), rec.get("width_value")
    if (
        not (wide and narrow and hand)
        or narrow["planner"]["threads_per_trial"] >= wide["planner"]["threads_per_trial"]
    ):
        return
    exported = json.loads((Path(wide["run_dir"]) / "summary.json").read_text())
    wide_acc = _row(exported, exported["ensemble"]["strategy"], exported["ensemble"]["tta"])["public_acc"]
    e_wide, e_narrow = float(np.mean(wide["epochs"])), float(np.mean(narrow["epochs"]))
    cost = hand["epoch_cost"]
    gain = 100 * (narrow["public_acc"] - wide_acc) + cost * (1 / e_narrow - 1 / e_wide)
    rec["run_width_value"] = {"epoch_cost": cost, "second_net_gain": round(gain, 3),
                              "wide_public_acc": wide_acc, "narrow_public_acc": narrow["public_acc"],
                              "wide_epochs": e_wide, "narrow_epochs": e_narrow,
                              "source": f"budget race {rec['minutes']:g} min: wide vs narrow"}  # fmt: skip


def final_table(rec: dict, root: Path, val_y: np.ndarray) -> None:
    """PrivateTest accuracy and bootstrap interval of every leg: the one place the race reads its labels,
    after every choice was made on PublicTest."""
    _, test_y = load_split(root, "PrivateTest")
    if "baseline" in rec:
        _, probs = _loaded(Path(rec["baseline"]["out"]))
        acc, ci = _score(probs["PrivateTest"], test_y)
        rec["baseline"].update(private_acc=acc, ci95=ci)
    if "pair_tta" in rec:
        pair = [_loaded(Path(o)) for o in rec["pair_tta"]["outs"]]
        probs = sum(p["PrivateTest"] + p["PrivateTest_flip"] for _, p in pair) / 4
        acc, ci = _score(probs, test_y)
        rec["pair_tta"].update(
            private_acc=acc, ci95=ci, alone_private_acc=[_score(p["PrivateTest"], test_y)[0] for _, p in pair]
        )
    for leg in ("first_trial", "fersearch"):
        if leg in rec:
            summary = json.loads((Path(rec[leg]["run_dir"]) / "summary.json").read_text())
            row = _row(summary, *rec[leg]["row"])
            rec[leg].update(private_acc=row["private_acc"], ci95=list(row["ci95"]))
            # where the points went: every row the run compared (snapshots, TTA, selection), PrivateTest
            rows = summary["comparison"]
            rec[leg]["private_rows"] = {
                f"{r['strategy']}{' + TTA' if r['tta'] else ''}": r["private_acc"] for r in rows
            }
    rec["complete"] = True


def format_record(r: dict) -> str:
    m = r["minutes"]
    lines = [
        f"budget {m:g} min on {r['cpu']} ({r['cores']} cores, AVX-512 BF16 "
        f"{'yes' if r['avx512_bf16'] else 'no'}, "
        f"commit {r['commit']})"
    ]
    lines.append(
        f"  {'':<11} {'PrivateTest':>11} {'95% CI':>15} {'PublicTest':>10} {'wall':>8} {'load':>5}  used"
    )
    used = {}
    if "baseline" in r:
        used["baseline"] = f"{r['baseline']['epochs']} epochs"
    if "pair_tta" in r:
        pr = r["pair_tta"]
        alone = ", ".join(f"{a:.4f}" for a in pr.get("alone_private_acc", pr["alone_public_acc"]))
        used["pair_tta"] = f"epochs {pr['epochs']} (chosen {pr['chosen_epochs']}), alone {alone}"
    for leg in ("first_trial", "fersearch"):
        if leg in r:
            e, pl = r[leg], r[leg]["planner"]
            used[leg] = (
                f"{e['trials']} trial(s), epochs {e['epochs']}, {pl['precision']} on "
                f"{pl['threads_per_trial']:g} thread(s), {e['candidates']} candidates, {e['strategy']}"
                f"{' + TTA' if e['tta'] else ''} of {len(e['members'])}"
            )
    for key, text in used.items():
        e = r[key]
        private = f"{'—':>11} {'':>15}"
        if "private_acc" in e:
            private = f"{e['private_acc']:>11.4f} {e['ci95'][0]:>7.4f}-{e['ci95'][1]:.4f}"
        lines.append(
            f"  {key:<11} {private} {e['public_acc']:>10.4f} {e['wall_s'] / 60:>6.2f}m "
            f"{e['load_before']:>5.2f}  {text}"
        )
    if not r.get("complete"):
        return "\n".join(lines)
    hand = [r[k]["private_acc"] for k in ("baseline", "pair_tta") if k in r]
    if "fersearch" in r and hand:
        diff = 100 * (r["fersearch"]["private_acc"] - max(hand))
        within = abs(r["fersearch"]["wall_s"] - 60 * m) / (60 * m)
        lines.append(
            f"  fersearch − best hand-written: {diff:+.2f} points; fersearch wall "
            f"{r['fersearch']['wall_s'] / 60:.2f} min ({100 * within:.1f}% off the budget)"
        )
    if "first_trial" in r and "baseline" in r:
        diff = 100 * (r["first_trial"]["private_acc"] - r["baseline"]["private_acc"])
        lines.append(f"  first trial alone − plain loop: {diff:+.2f} points (recipe parity)")
    if "private_rows" in r.get("fersearch", {}):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in r["fersearch"]["private_rows"].items())
        lines.append(f"  fersearch's rows (PrivateTest, chosen on PublicTest as exported): {shown}")
    if "run_width_value" in r:
        w = r["run_width_value"]
        lines.append(
            f"  width inside fersearch (PublicTest, exported): one wide trial ({w['wide_epochs']:.0f} "
            f"epochs) {w['wide_public_acc']:.4f}, trials side by side ({w['narrow_epochs']:.1f} each) "
            f"{w['narrow_public_acc']:.4f}: a second net worth {w['second_net_gain']:+.2f} points over "
            "snapshots + TTA"
        )
    if "width_value" in r:
        w = r["width_value"]
        lines.append(
            f"  width (PublicTest): the pair's pace {w['pace_share']:.2f} of the loop's; a second net worth "
            f"{w['second_net_gain']:+.2f} points, fewer epochs cost {w['epoch_cost']:.0f}/E points"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="FER2013 Kaggle CSV (.csv or .csv.gz)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[20.0])
    ap.add_argument(
        "--legs", default=",".join(LEGS), help=f"comma-separated, in this order: {','.join(LEGS)}"
    )
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--results", default=str(RESULTS), help="JSON records, replaced per budget")
    ap.add_argument(
        "--keep", action="store_true",
        help="keep the legs this budget's record already has (same CPU, same --work) and run only --legs",
    )  # fmt: skip
    args = ap.parse_args()
    legs = tuple(leg for leg in LEGS if leg in args.legs.split(","))
    unknown = set(args.legs.split(",")) - set(LEGS)
    if unknown or not legs:
        raise SystemExit(
            f"budget_race: --legs: unknown leg(s) {', '.join(sorted(unknown))}; from {', '.join(LEGS)}"
        )
    work = Path(args.work or tempfile.mkdtemp(prefix="budget_race-"))
    path = Path(args.results)
    for minutes in args.minutes:

        def save(rec: dict, minutes: float = minutes) -> None:
            records = json.loads(path.read_text()) if path.is_file() else []
            records = [r for r in records if r["minutes"] != minutes] + [rec]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(sorted(records, key=lambda r: r["minutes"]), indent=2) + "\n")

        records = json.loads(path.read_text()) if path.is_file() else []
        kept = next((r for r in records if r["minutes"] == minutes), None) if args.keep else None
        rec = race(Path(args.data).resolve(), minutes, work / f"{minutes:g}min", legs, save, kept)
        print(format_record(rec), flush=True)
    print(f"records: {path}")


if __name__ == "__main__":
    main()
