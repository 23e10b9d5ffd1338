"""The driver of a search submitted as a Ray Job: ``python -m cluster.job SPEC.yaml [--data] [--out]``.

Runs on the cluster (the job's entrypoint, cwd = the shipped working directory) and connects to it (Ray
Jobs set ``RAY_ADDRESS``). The search directory defaults to ``$FERSEARCH_STORAGE/runs/<name>-<time>``:
``FERSEARCH_STORAGE`` is the storage every node mounts (``/mnt/fersearch`` in ``cluster/*.yaml`` and the
KubeRay manifests); without it, ``runs/`` in the working directory, which is only right on one machine.

The last line of the job's output is ``FERSEARCH_RESULT {json}`` (search directory, trials with status,
epochs and PublicTest accuracy), so a submitter reads the result from the logs alone, without access to
the cluster's storage. The same JSON is written to ``<search dir>/job_result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULT_PREFIX = "FERSEARCH_RESULT "
RESULT_FILE = "job_result.json"
STORAGE_ENV = "FERSEARCH_STORAGE"


def default_out(name: str, storage: str | None = None) -> Path:
    """``$FERSEARCH_STORAGE/runs/<name>-<time>`` (a path all nodes share). Without it, ``~/fersearch-runs``
    on the head, with a warning: right for one machine only, and never the job's working directory,
    which is a temporary copy Ray deletes."""
    root = storage if storage is not None else os.environ.get(STORAGE_ENV)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not root:
        fallback = Path.home() / "fersearch-runs" / f"{name}-{stamp}"
        print(f"warning: {STORAGE_ENV} is not set: writing to {fallback}, on this node only", flush=True)
        return fallback
    return Path(root) / "runs" / f"{name}-{stamp}"


def result_summary(run) -> dict:
    """What the submitter gets back: enough to judge the search without opening its directory."""
    trials = [
        {
            "trial_id": t.trial_id,
            "status": t.status,
            "arch": t.arch,
            "val_acc": t.val_acc,
            "epochs": t.epochs,
            "best_epoch": t.best_epoch,
            "error": t.error,
        }
        for t in run.trials
    ]
    done = [t for t in run.trials if t.status == "done"]
    best = max(done, key=lambda t: t.val_acc, default=None)
    return {
        "name": run.cfg.name,
        "out_dir": str(run.out_dir),
        "num_trials": len(trials),
        "num_done": len(done),
        "num_error": sum(t.status == "error" for t in run.trials),
        "best_trial": best.trial_id if best else None,
        "best_val_acc": best.val_acc if best else None,
        "trials": trials,
    }


def parse_result(logs: str) -> dict | None:
    """The ``FERSEARCH_RESULT`` JSON of a job's logs (the last one), or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cluster.job", description="run a search as a Ray Job's driver"
    )
    p.add_argument("spec", nargs="?", help="search spec YAML, relative to the working directory")
    p.add_argument("--spec-json", help="the validated config as JSON (what `fersearch submit` sends)")
    p.add_argument("--data", help="FER2013 CSV readable from the head (shared storage or URL)")
    p.add_argument("--out", help="search directory (default $FERSEARCH_STORAGE/runs/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="finish the interrupted search in --out")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, which Ray Jobs set; else local)")
    args = p.parse_args(argv)

    from search.cli import format_trials
    from search.spec import config_from_dict, load_spec
    from search.tuning import init_ray, read_trials, resume, search

    if args.resume:
        if not args.out:
            p.error("--resume needs --out DIR")
        init_ray(args.address or os.environ.get("RAY_ADDRESS"))
        run = resume(args.out)
    else:
        if args.spec_json:
            payload = json.loads(args.spec_json)
            cfg, extra = config_from_dict(payload["config"]), payload.get("extra", {})
        elif args.spec:
            cfg, extra = load_spec(args.spec)
        else:
            p.error("give a spec path or --spec-json")
        data = args.data or extra.get("data")
        if not data:
            p.error("no data: pass --data or set `data:` in the spec")
        out = Path(args.out or extra.get("out") or default_out(cfg.name))
        init_ray(args.address or os.environ.get("RAY_ADDRESS"))
        import ray

        print(f"cluster: {len(ray.nodes())} node(s), resources {ray.cluster_resources()}", flush=True)
        run = search(cfg, data, out)
    print(format_trials(read_trials(run.out_dir), "val_acc"))
    summary = result_summary(run)
    (Path(run.out_dir) / RESULT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"search directory: {run.out_dir}")
    print(RESULT_PREFIX + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
