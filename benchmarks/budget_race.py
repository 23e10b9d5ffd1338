"""The budget race: at equal wall time on real FER2013, does `fersearch run` beat what a user writes by hand?

Per budget M (minutes), one after the other on the same machine:

1. **baseline** — the plain loop of ``benchmarks/single_model_baseline.py`` (one mini_xception, Adam 2e-3,
   cosine over M minutes, flip + shift, all threads);
2. **pair_tta** — two such loops side by side, one thread each, each keeping its best PublicTest epoch,
   their average with flip TTA;
3. **fersearch** — ``fersearch run --budget-min M``: data preparation, search, selection and export all
   inside M (its wall time is the subprocess's, interpreter start included).

Prints the three PrivateTest accuracies with bootstrap 95% intervals, the difference in points, and what
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
from pathlib import Path

import numpy as np

from data_pipeline import DataManifest
from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013
from search.ensemble import bootstrap_ci

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


def race(data: Path, minutes: float, work: Path) -> dict:
    root = work / "data"
    if DataManifest.try_read(root) is None:
        prepare_fer2013(data, root)
    _, val_y = load_split(root, "PublicTest")

    print(f"[{minutes:g} min] baseline: one loop on all threads", flush=True)
    t = time.time()
    proc, out = _baseline(root, minutes, work, "baseline", os.cpu_count() or 2, 0, best=False)
    proc.wait()
    base_info, base_probs = _loaded(out)
    base_wall = time.time() - t

    print(f"[{minutes:g} min] pair: two loops side by side, one thread each", flush=True)
    t = time.time()
    procs = [_baseline(root, minutes, work, f"pair_{i}", 1, i, best=True) for i in range(2)]
    for p, _ in procs:
        p.wait()
    pair = [_loaded(out) for _, out in procs]
    pair_wall = time.time() - t
    pair_val = sum(p["PublicTest"] + p["PublicTest_flip"] for _, p in pair) / 4
    pair_test = sum(p["PrivateTest"] + p["PrivateTest_flip"] for _, p in pair) / 4

    print(f"[{minutes:g} min] fersearch run --budget-min {minutes:g}", flush=True)
    run_dir = work / "fersearch"
    t = time.time()
    subprocess.run(
        [sys.executable, "-m", "search.cli", "run", "--data", str(data), "--budget-min", str(minutes),
         "--out", str(run_dir)],
        check=True, stdout=open(work / "fersearch.log", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    fs_wall = time.time() - t
    summary = json.loads((run_dir / "summary.json").read_text())

    # PrivateTest labels: read here, after every choice above was made on PublicTest.
    _, test_y = load_split(root, "PrivateTest")
    base_acc, base_ci = _score(base_probs["PrivateTest"], test_y)
    pair_acc, pair_ci = _score(pair_test, test_y)
    chosen = next(
        r for r in summary["comparison"]
        if (r["strategy"], r["tta"]) == (summary["ensemble"]["strategy"], summary["ensemble"]["tta"])
    )  # fmt: skip
    trials = summary["trials"]
    return {
        "minutes": minutes,
        "cores": os.cpu_count(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=Path(__file__).parent).stdout.strip(),  # fmt: skip
        "load_before": os.getloadavg()[0],
        "baseline": {"private_acc": base_acc, "ci95": base_ci, "public_acc": base_info["public_acc"],
                     "wall_s": round(base_wall, 1), "epochs": base_info["epochs"]},  # fmt: skip
        "pair_tta": {"private_acc": pair_acc, "ci95": pair_ci,
                     "public_acc": float(np.mean(pair_val.argmax(1) == val_y)), "wall_s": round(pair_wall, 1),
                     "epochs": [info["epochs"] for info, _ in pair],
                     "chosen_epochs": [info["chosen_epochs"] for info, _ in pair],
                     "alone_private_acc": [_score(p["PrivateTest"], test_y)[0] for _, p in pair],
                     },  # fmt: skip
        "fersearch": {"private_acc": chosen["private_acc"], "ci95": list(chosen["ci95"]),
                      "public_acc": chosen["public_acc"], "wall_s": round(fs_wall, 1),
                      "trials": len(trials), "epochs": [t.get("epochs") for t in trials],
                      "candidates": summary.get("candidates", len(chosen["members"])),
                      "members": chosen["members"], "strategy": chosen["strategy"], "tta": chosen["tta"],
                      "run_dir": str(run_dir)},  # fmt: skip
    }


def format_record(r: dict) -> str:
    m = r["minutes"]
    lines = [
        f"budget {m:g} min on {r['cores']} cores (commit {r['commit']}, load before {r['load_before']:.2f})"
    ]
    lines.append(f"  {'':<10} {'PrivateTest':>11} {'95% CI':>15} {'PublicTest':>10} {'wall':>8}  used")
    fs = r["fersearch"]
    for key, used in (
        ("baseline", f"{r['baseline']['epochs']} epochs"),
        ("pair_tta", f"epochs {r['pair_tta']['epochs']} (chosen {r['pair_tta']['chosen_epochs']}), alone "
                     + ", ".join(f"{a:.4f}" for a in r["pair_tta"]["alone_private_acc"])),
        ("fersearch", f"{fs['trials']} trials, epochs {fs['epochs']}, {fs['candidates']} candidates, "
                      f"exported {fs['strategy']}{' + TTA' if fs['tta'] else ''} of {len(fs['members'])}"),
    ):  # fmt: skip
        e = r[key]
        lines.append(
            f"  {key:<10} {e['private_acc']:>11.4f} {e['ci95'][0]:>7.4f}-{e['ci95'][1]:.4f} "
            f"{e['public_acc']:>10.4f} {e['wall_s'] / 60:>6.2f}m  {used}"
        )
    best_hand = max(r["baseline"]["private_acc"], r["pair_tta"]["private_acc"])
    diff = 100 * (r["fersearch"]["private_acc"] - best_hand)
    within = abs(r["fersearch"]["wall_s"] - 60 * m) / (60 * m)
    lines.append(
        f"  fersearch − best hand-written: {diff:+.2f} points; fersearch wall {fs['wall_s'] / 60:.2f} min "
        f"({100 * within:.1f}% off the budget)"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="FER2013 Kaggle CSV (.csv or .csv.gz)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[20.0])
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--results", default=str(RESULTS), help="JSON records, replaced per budget")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="budget_race-"))
    path = Path(args.results)
    records = json.loads(path.read_text()) if path.is_file() else []
    for minutes in args.minutes:
        rec = race(Path(args.data).resolve(), minutes, work / f"{minutes:g}min")
        print(format_record(rec), flush=True)
        records = [r for r in records if r["minutes"] != minutes] + [rec]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(records, key=lambda r: r["minutes"]), indent=2) + "\n")
    print(f"records: {path}")


if __name__ == "__main__":
    main()
