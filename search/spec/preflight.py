"""Checks that run before Ray starts and before a run folder exists: what the environment cannot give
(a data file that is not there, a GPU this machine lacks, more CPUs per trial than it has) ends in one
``fersearch: error: …`` line that names the flag and the fix, instead of a trial PENDING for the whole
budget or a traceback after the data was prepared. Spec values themselves are checked by search.spec.config.
"""

from __future__ import annotations

import os
from pathlib import Path


class PreflightError(ValueError):
    """What the environment cannot give a search, with the fix; the CLI prints it as one line, exit 2."""


def check_data(path: str | Path | None, flag: str = "--data") -> None:
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise PreflightError(f"{flag} {p}: no such file")
    if p.is_dir():
        raise PreflightError(f"{flag} {p}: is a folder; give the FER2013 CSV (.csv or .csv.gz)")
    if not os.access(p, os.R_OK):
        raise PreflightError(f"{flag} {p}: not readable")


def check_search_dir(path: str | Path) -> None:
    """A folder that ``fersearch search`` or ``run`` wrote: ``search.json`` or Tune's ``tune/``."""
    p = Path(path)
    if not p.is_dir():
        raise PreflightError(f"{p}: no such search directory")
    if not ((p / "search.json").is_file() or (p / "tune").is_dir()):
        raise PreflightError(
            f"{p}: not a fersearch search directory (no search.json or tune/); give the folder that "
            "`fersearch search --out` or `fersearch run --out` wrote"
        )


def check_resources(cpus: float, gpus: float, address: str | None) -> None:
    """A local search must fit this machine (a cluster's resources are the cluster's to check: Ray keeps
    such a trial pending until a node that has them joins)."""
    if address:
        return
    if gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise PreflightError(
                f"--gpus-per-trial {gpus:g}: this machine has no CUDA GPU (torch.cuda.is_available() is "
                "False); use --gpus-per-trial 0, or --address a Ray cluster with GPU nodes"
            )
    have = os.cpu_count() or 1
    if cpus > have:
        raise PreflightError(f"--cpus-per-trial {cpus:g}: this machine has {have} CPUs; use at most {have}")


def check_submit_address(address: str) -> None:
    """The dashboard's HTTP Jobs API needs the ``ray[default]`` extra (aiohttp & co.); GCS does not."""
    if not address.startswith(("http://", "https://")):
        return
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        import ray

        raise PreflightError(
            f"--address {address}: the dashboard's Jobs API needs Ray's HTTP client: pip install "
            f"'ray[default]=={ray.__version__}', or submit through GCS "
            "from a cluster node with --address auto or <head>:6379"
        ) from None
