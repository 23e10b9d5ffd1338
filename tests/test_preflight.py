"""Mistakes a user can make on the command line end before Ray starts and before a run folder exists: one
``error:`` line naming the flag and the fix, exit code 2 (run in one fresh interpreter, so
``ray.is_initialized()`` tells about these calls only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli_calls

ROOT = Path(__file__).resolve().parents[1]



def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def cases(tmp: Path) -> list[tuple[str, list[str], str, str]]:
    """(id, argv, the error line's prefix, a regex for the rest); ``OUT`` stands for the run folder."""
    data = tmp / "fer2013.csv"
    data.write_text("emotion,pixels,Usage\n")
    missing = tmp / "nowhere" / "fer2013.csv"
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "pre", "data": str(missing)}))
    good_spec = tmp / "good.yaml"
    good_spec.write_text(yaml.safe_dump({"name": "pre", "data": str(data)}))
    empty = tmp / "empty"
    empty.mkdir()
    e = "fersearch: error: "
    table = [
        ("missing data", ["run", "--data", str(missing), "--out", "OUT"], e,
         rf"--data {missing}: no such file$"),
        ("data is a folder", ["run", "--data", str(tmp), "--out", "OUT"], e, r"--data .*: is a folder; give"),
        ("cpus beyond the machine", ["run", "--cpus-per-trial", "999", "--out", "OUT"], e,
         r"--cpus-per-trial 999: this machine has \d+ CPUs; use at most \d+$"),
        ("budget in minutes", ["run", "--budget-min", "-1", "--out", "OUT"], e,
         r"--budget-min: expected minutes > 0, got -1$"),
        ("spec data missing", ["search", str(spec), "--out", "OUT"], e,
         rf"{spec}: data: {missing}: no such file$"),
        ("export of no search", ["export", str(empty), "--out", "OUT"], e,
         rf"{empty}: not a fersearch search directory \(no search.json or tune/\); give the folder"),
    ]  # fmt: skip
    if not _has_cuda():
        table.append(
            ("gpu without cuda", ["run", "--gpus-per-trial", "1", "--out", "OUT"], e,
             r"--gpus-per-trial 1: this machine has no CUDA GPU .*; use --gpus-per-trial 0, or --address")
        )  # fmt: skip
    if not _has_aiohttp():
        table.append(
            ("submit over http", ["submit", str(good_spec), "--address", "http://127.0.0.1:8265"],
             "fersearch submit: error: ",
             r"--address http://127\.0\.0\.1:8265: .*pip install 'ray\[default\]==")
        )  # fmt: skip
    return table


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[tuple[tuple, dict]]:
    tmp = tmp_path_factory.mktemp("preflight")
    table = cases(tmp)
    calls = []
    for i, (_, argv, _, _) in enumerate(table):
        out = str(tmp / f"run_{i}")
        calls.append(([out if a == "OUT" else a for a in argv], out))
    return list(zip(table, run_cli_calls(calls, tmp), strict=True))


def test_every_mistake_ends_before_ray_with_one_line(outcomes):
    assert len(outcomes) >= 6
    for (name, _, prefix, pattern), got in outcomes:
        lines = got["stderr"].splitlines()
        assert got["code"] == 2, (name, got)
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith(prefix), (name, lines[0])
        assert re.match(pattern, lines[0][len(prefix) :]), (name, pattern, lines[0])
        assert got["ray"] is False, name
        assert got["out_exists"] is False, name
