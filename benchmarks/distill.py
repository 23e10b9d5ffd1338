"""Distillation on real FER2013: the best single member, the ensemble and its student, from one run.

For a finished ``fersearch run`` (its ``export/`` and ``data/``): the export's best single member (highest
PublicTest accuracy) exported alone without TTA, the ensemble as exported, and a student distilled from it
(``fersearch distill``, or ``--student DIR`` for one already trained). Each gets PrivateTest accuracy with a
bootstrap 95% interval and images/s on ONNX Runtime with one thread (batches of 256 faces, best of three
passes over 2048 PublicTest images); the share of the ensemble's gain over the single member that the
student keeps. PrivateTest labels are read once, for the final table.

    python -m benchmarks.distill --run runs/<quick run> --budget-min 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import load, machine_info
from data_pipeline.dataset import load_split
from search.ensemble import Candidate, WeightedEnsemble, bootstrap_ci
from search.serving import DistillOptions, ExportManifest, Predictor, distill, export_ensemble
from search.trial import WEIGHTS_FILE

RESULTS = Path(__file__).parent / "results" / "distill.json"


def single_member(export: Path, out: Path) -> Path:
    """The export's best member (PublicTest accuracy, then weight) as an export of its own, no TTA."""
    manifest = ExportManifest.read(export)
    best = manifest.best_member()
    ckpt = out.parent / ".single-weights"
    ckpt.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export / best.file, ckpt / WEIGHTS_FILE)
    member = Candidate(
        best.trial_id or best.file, best.arch, dict(best.arch_kwargs), ckpt, best.val_acc or 0.0
    )
    return export_ensemble(
        [member], WeightedEnsemble({0: 1.0}, "best single", False), out, classes=manifest.classes,
        metrics={}, preprocessing=manifest.preprocessing,
    )  # fmt: skip


def images_per_s(export: Path, images: np.ndarray) -> float:
    """Faces/s of an export on ONNX Runtime with one thread: the best of three timed passes."""
    predictor = Predictor.from_dir(export, backend="onnx", threads=1)
    predictor.predict_proba(images[:256])
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        predictor.predict_proba(images, batch_size=256)
        best = max(best, len(images) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a finished fersearch run (export/ and data/)")
    ap.add_argument("--student", type=Path, help="an already distilled student export (else one is trained)")
    ap.add_argument("--budget-min", type=float, default=10.0)
    ap.add_argument("--arch")
    ap.add_argument("--temperature", default="2,4")
    args = ap.parse_args()
    export, data = args.run / "export", args.run / "data"
    rec: dict = {
        **machine_info(),
        "load_before": load(),
        "run": str(args.run),
        "started": time.strftime("%F %T"),
    }
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    try:
        student = args.student
        if student is None:
            options = DistillOptions(
                arch=args.arch, budget_s=60 * args.budget_min,
                temperatures=tuple(float(t) for t in args.temperature.split(",")),
            )  # fmt: skip
            t = time.time()
            result = distill(args.run, options, out=work / "student")
            rec["distill"] = {"wall_s": round(time.time() - t, 1), "temperature": result.temperature,
                              "epoch": result.epoch, "tried": result.tried, "arch": result.arch}  # fmt: skip
            student = result.export_dir
        models = {"single": single_member(export, work / "single"), "ensemble": export, "student": student}
        test_x = load_split(data, "PrivateTest", with_labels=False)[0]
        bench_x = load_split(data, "PublicTest", with_labels=False)[0][:2048]
        probs, rows = {}, {}
        for name, path in models.items():
            predictor = Predictor.from_dir(path)
            probs[name] = predictor.predict_proba(test_x)
            rows[name] = {"members": len(predictor.manifest.members), "tta": predictor.manifest.tta_flip,
                          "images_per_s": round(images_per_s(path, bench_x), 1)}  # fmt: skip
        final_table(rec, rows, probs, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_record(rec))
    RESULTS.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps([*old, rec], indent=1) + "\n")


def final_table(rec: dict, rows: dict, probs: dict, data: Path) -> None:
    """PrivateTest accuracy and interval of each model: the one place the labels are read."""
    _, test_y = load_split(data, "PrivateTest")
    for name, p in probs.items():
        pred = p.argmax(1)
        rows[name]["private_acc"] = float(np.mean(pred == test_y))
        rows[name]["ci95"] = list(bootstrap_ci((pred == test_y).astype(np.float64)))
    single, ensemble, student = (rows[k]["private_acc"] for k in ("single", "ensemble", "student"))
    rec["rows"] = rows
    rec["kept_share"] = (student - single) / (ensemble - single) if ensemble != single else None
    rec["speed_vs_single"] = rows["student"]["images_per_s"] / rows["single"]["images_per_s"]
    rec["speed_vs_ensemble"] = rows["student"]["images_per_s"] / rows["ensemble"]["images_per_s"]


def format_record(rec: dict) -> str:
    lines = [
        f"distillation on {rec['cpu']} ({rec['cores']} cores, commit {rec['commit']}, "
        f"load {rec['load_before']})"
    ]
    if "distill" in rec:
        d = rec["distill"]
        lines.append(
            f"  student {d['arch']} at T={d['temperature']:g}, epoch {d['epoch']}, "
            f"trained in {d['wall_s']:.0f} s"
        )
    lines.append(f"  {'':<9} {'PrivateTest':>11} {'95% CI':>15} {'faces/s (ORT, 1 thread)':>24}  members")
    for name, r in rec["rows"].items():
        lines.append(
            f"  {name:<9} {r['private_acc']:>11.4f} {r['ci95'][0]:>7.4f}-{r['ci95'][1]:.4f} "
            f"{r['images_per_s']:>24.0f}  {r['members']}{' + TTA' if r['tta'] else ''}"
        )
    share = rec["kept_share"]
    lines.append(
        f"  the student keeps {'n/a' if share is None else f'{100 * share:.0f}%'} of the ensemble's gain "
        f"over the single member, at {rec['speed_vs_single']:.2f}x the single member's speed and "
        f"{rec['speed_vs_ensemble']:.1f}x the ensemble's"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
