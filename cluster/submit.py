"""``fersearch submit SPEC --address ADDR``: run a search as a Ray Job on a cluster and stream its logs.

The spec is validated here (a typo fails on your laptop, not on the cluster), then sent as JSON to the
job's entrypoint ``python -m cluster.job``; the project travels as the job's ``runtime_env`` working
directory (``.gitignore`` and :data:`EXCLUDES` respected), optionally with its pinned dependencies
(``--pip``, for clusters whose image lacks them, e.g. KubeRay with stock Ray images).

Two ways in, same Ray Jobs machinery (a detached ``JobSupervisor`` actor on the head runs the entrypoint,
the job's status lives in GCS, its output in ``job-driver-<id>.log`` on the head):

* ``http://head:8265`` — the Jobs REST API of the dashboard (``JobSubmissionClient``). Use this with
  ``ray dashboard cluster/aws.yaml`` or ``kubectl port-forward svc/fersearch-head-svc 8265``.
* ``auto`` / ``host:6379`` — a GCS address, from a machine that is part of the cluster (e.g. the head via
  ``ray attach``). The working directory is uploaded through GCS and the job is handed to Ray's
  ``JobManager`` directly, so it also works where the dashboard's HTTP server is absent (a minimal Ray
  install without ``ray[default]``, like this project's venv).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.job import RESULT_PREFIX, parse_result

# Never shipped: environments, outputs, data, caches (the job gets data from shared storage).
EXCLUDES = [
    ".venv", ".git", "runs", "data", "wandb", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    "*.parquet", "*.csv.gz",
]  # fmt: skip
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ADDRESS_HELP = (
    "http://<head>:8265 (the dashboard's Jobs API) or auto / <head>:6379 (GCS, from a cluster node)"
)


class SubmitError(RuntimeError):
    """The job could not be submitted or followed."""


@dataclass
class JobOutcome:
    submission_id: str
    status: str
    message: str | None
    logs: str
    result: dict | None

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def project_root(start: Path | None = None) -> Path:
    """The directory holding ``pyproject.toml`` (what gets shipped), from ``start`` upwards."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "cluster").is_dir():
            return d
    raise SubmitError(f"{here}: not inside the fersearch project (no pyproject.toml with cluster/)")


def build_runtime_env(
    working_dir: Path, *, pip: bool = False, env_vars: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job's runtime_env: the project as working_dir, its pins with ``pip``, W&B settings passed on."""
    import os

    from cluster.validate import project_pins

    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(EXCLUDES)}
    forwarded = {
        k: os.environ[k] for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT") if k in os.environ
    }
    if "WANDB_API_KEY" not in forwarded:
        forwarded.setdefault("WANDB_MODE", "offline")
    env["env_vars"] = {**forwarded, **(env_vars or {})}
    if pip:
        env["pip"] = sorted(project_pins(working_dir).values())
    return env


def build_entrypoint(cfg, *, data: str, out: str | None = None, python: str = "python") -> str:
    """``python -m cluster.job --spec-json … --data …``, shell-quoted (Ray runs it with ``sh -c``)."""
    payload = json.dumps({"config": cfg.to_dict()}, separators=(",", ":"))
    words = [python, "-m", "cluster.job", "--spec-json", payload, "--data", data]
    if out:
        words += ["--out", out]
    return " ".join(shlex.quote(w) for w in words)


def new_submission_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())[:40]
    return f"fersearch-{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def transport_for(address: str) -> str:
    if address.startswith(("http://", "https://")):
        return "http"
    if address.startswith("ray://"):
        raise SubmitError(
            f"{address}: Ray Client addresses cannot submit jobs; use the dashboard address "
            "http://<head>:8265 (or the GCS address <head>:6379 from a cluster node)"
        )
    return "gcs"


class _LogPrinter:
    """Prints the part of a growing log not printed yet."""

    def __init__(self, sink: Callable[[str], None] | None) -> None:
        self.text = ""
        self.sink = sink

    def update(self, full: str) -> None:
        new = full[len(self.text) :] if full.startswith(self.text) else full
        self.text = full
        if new and self.sink is not None:
            self.sink(new)


# ---- HTTP: the dashboard's Jobs API --------------------------------------------------------------------


def _submit_http(
    address: str,
    entrypoint: str,
    runtime_env: dict,
    submission_id: str,
    metadata: dict,
    follow: bool,
    timeout: float | None,
    sink: Callable[[str], None] | None,
    poll_s: float,
) -> JobOutcome:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    client.submit_job(
        entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata=metadata
    )
    printer = _LogPrinter(sink)
    deadline = None if timeout is None else time.monotonic() + timeout
    status = str(client.get_job_status(submission_id).value)
    while follow and status not in TERMINAL:
        printer.update(client.get_job_logs(submission_id))
        if deadline is not None and time.monotonic() > deadline:
            client.stop_job(submission_id)
            raise SubmitError(f"job {submission_id} still {status} after {timeout}s: stopped it")
        time.sleep(poll_s)
        status = str(client.get_job_status(submission_id).value)
    logs = client.get_job_logs(submission_id)
    printer.update(logs)
    info = client.get_job_info(submission_id)
    return JobOutcome(submission_id, status, info.message, logs, parse_result(logs))


# ---- GCS: Ray's JobManager from a driver on a cluster node ----------------------------------------------


def _read_log_from(submission_id: str, offset: int) -> tuple[str, int]:
    """Runs on the head: the job driver's log from byte ``offset`` on (the supervisor writes it there)."""
    from ray.dashboard.modules.job.job_log_storage_client import JobLogStorageClient

    path = Path(JobLogStorageClient().get_log_file_path(submission_id))
    if not path.is_file():
        return "", offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return data.decode("utf-8", errors="replace"), offset + len(data)


def _head_node_id() -> str:
    """The head's node id, from GCS's node table (the head carries ``node:__internal_head__``)."""
    import ray

    heads = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]]
    if not heads:
        raise SubmitError("no alive head node in the cluster")
    return heads[0]


async def _submit_gcs(
    address: str,
    entrypoint: str,
    runtime_env: dict,
    submission_id: str,
    metadata: dict,
    follow: bool,
    timeout: float | None,
    sink: Callable[[str], None] | None,
    poll_s: float,
) -> JobOutcome:
    import ray
    from ray.dashboard.modules.job.job_manager import JobManager
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Connecting with the working dir uploads it to GCS (gcs://_ray_pkg_<hash>.zip); the job gets the
    # uploaded form, as the Jobs REST API would have stored it (pip and env vars are the job's alone).
    ship = {k: runtime_env[k] for k in ("working_dir", "excludes") if k in runtime_env}
    ray.init(address=address, runtime_env=ship, log_to_driver=False, logging_level="ERROR")
    try:
        uri = str(ray.get_runtime_context().runtime_env.get("working_dir", ""))
        if not uri.startswith("gcs://"):
            raise SubmitError(f"working_dir was not uploaded: {uri!r}")
        uploaded = {**{k: v for k, v in runtime_env.items() if k != "excludes"}, "working_dir": uri}
        worker = ray._private.worker
        gcs = worker.global_worker.gcs_client
        manager = JobManager(gcs, worker._global_node.get_logs_dir_path())
        # The dashboard pins job drivers to the head (the node that is not spot/preemptible); without a
        # dashboard nothing publishes the head's id, so pin it here the same way (a node-id label).
        head = _head_node_id()
        await manager.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env=uploaded,
            metadata=metadata,
            entrypoint_label_selector={ray._raylet.RAY_NODE_ID_KEY: head},
        )
        printer = _LogPrinter(sink)
        text, offset = "", 0
        deadline = None if timeout is None else time.monotonic() + timeout

        async def pull(node_id: str) -> None:
            nonlocal text, offset
            reader = ray.remote(num_cpus=0)(_read_log_from).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            )
            chunk, offset = await reader.remote(submission_id, offset)
            text += chunk
            printer.update(text)

        info = await manager.get_job_info(submission_id)
        while follow and info.status.value not in TERMINAL:
            await pull(info.driver_node_id or head)
            if deadline is not None and time.monotonic() > deadline:
                manager.stop_job(submission_id)
                raise SubmitError(
                    f"job {submission_id} still {info.status.value} after {timeout}s: stopped it"
                )
            await asyncio.sleep(poll_s)
            info = await manager.get_job_info(submission_id)
        await pull(info.driver_node_id or head)
        status = info.status.value
        return JobOutcome(submission_id, str(status), info.message, text, parse_result(text))
    finally:
        ray.shutdown()


def submit_job(
    cfg,
    address: str,
    *,
    data: str,
    out: str | None = None,
    working_dir: Path | None = None,
    pip: bool = False,
    env_vars: dict[str, str] | None = None,
    follow: bool = True,
    timeout: float | None = None,
    sink: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    submission_id: str | None = None,
) -> JobOutcome:
    """Submit ``cfg`` (a validated SearchConfig) as a Ray Job; with ``follow``, stream logs until it ends."""
    working_dir = project_root(working_dir)
    runtime_env = build_runtime_env(working_dir, pip=pip, env_vars=env_vars)
    entrypoint = build_entrypoint(cfg, data=data, out=out)
    submission_id = submission_id or new_submission_id(cfg.name)
    metadata = {"fersearch_spec": cfg.name, "submitted_by": getpass.getuser()}
    args = (address, entrypoint, runtime_env, submission_id, metadata, follow, timeout, sink, poll_s)
    if transport_for(address) == "http":
        return _submit_http(*args)
    return asyncio.run(_submit_gcs(*args))


def _stdout_sink(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def submit_spec(args: argparse.Namespace) -> int:
    """The ``submit`` verb: spec + CLI overrides → validated config → Ray Job → logs → result."""
    from search.spec import check_submit_address, load_spec

    if not args.address:
        raise SubmitError(f"--address is required: {ADDRESS_HELP}")
    check_submit_address(args.address)
    cfg, extra = load_spec(args.spec)
    if getattr(args, "apply_overrides", None):
        cfg = args.apply_overrides(args, cfg)
    data = args.data or extra.get("data")
    if not data:
        raise SubmitError(f"no data: set `data:` in {args.spec} or pass --data (a path the head can read)")
    out = args.out or extra.get("out")
    for what, path in (("data", str(data)), ("--out", out)):
        if path and "://" not in path and not Path(path).is_absolute():
            raise SubmitError(
                f"{what} {path!r} is relative; the job runs in a temporary copy of the project, so give an "
                "absolute path the head can read (shared storage, e.g. /mnt/fersearch/...)"
            )
    env_vars = dict(kv.split("=", 1) for kv in args.env or [])
    print(f"submitting {cfg.name!r} to {args.address} …", flush=True)
    outcome = submit_job(
        cfg,
        args.address,
        data=str(data),
        out=out,
        pip=args.pip,
        env_vars=env_vars,
        follow=not args.no_follow,
        timeout=args.timeout,
        sink=_stdout_sink,
    )
    print(
        f"\njob {outcome.submission_id}: {outcome.status}"
        + (f" ({outcome.message})" if outcome.message else "")
    )
    if args.no_follow:
        return 0
    if outcome.result:
        r = outcome.result
        print(
            f"{r['num_done']}/{r['num_trials']} trials done, {r['num_error']} failed; best "
            f"{r['best_trial']} (PublicTest accuracy {r['best_val_acc']}); search directory {r['out_dir']}"
        )
    return 0 if outcome.succeeded else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The submit arguments; ``--address`` unless the parser has it already (``fersearch``'s budget flags
    carry one for ``search``/``run``; for ``submit`` it names the cluster and is required)."""
    p.add_argument("spec", help="search spec YAML (validated here before anything is sent)")
    if not any("--address" in a.option_strings for a in p._actions):
        p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--data", help="FER2013 CSV as the head sees it (shared storage); default: the spec's")
    p.add_argument("--out", help="search directory on shared storage (default $FERSEARCH_STORAGE/runs/…)")
    p.add_argument("--pip", action="store_true", help="also install the project's pinned deps in the job")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the job")
    p.add_argument("--no-follow", action="store_true", help="return after submitting")
    p.add_argument("--timeout", type=float, help="stop the job if it runs longer (seconds)")


def run_verb(args: argparse.Namespace) -> int:
    """``fersearch submit`` / ``python -m cluster.submit``: errors as one line, exit code 2."""
    from search.spec import PreflightError, SpecError

    try:
        return submit_spec(args)
    except (PreflightError, SpecError, SubmitError, FileNotFoundError) as e:
        print(f"fersearch submit: error: {e}", file=sys.stderr)
        return 2


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The submit arguments plus the budget/resource overrides ``fersearch search`` has."""
    from search.cli import apply_overrides, budget_flags

    budget_flags(p)
    add_arguments(p)
    p.set_defaults(func=run_verb, apply_overrides=apply_overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.submit", description=__doc__.split("\n\n")[0])
    configure_parser(p)
    args = p.parse_args(argv)
    return args.func(args)


__all__ = [
    "RESULT_PREFIX",
    "JobOutcome",
    "SubmitError",
    "build_entrypoint",
    "build_runtime_env",
    "submit_job",
]

if __name__ == "__main__":
    sys.exit(main())
