"""Shared fixtures: one local Ray instance for the whole session, in a temp dir of its own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    tmp = tempfile.mkdtemp(prefix="fsray", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    os.environ.setdefault("WANDB_MODE", "offline")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def write_kaggle_csv(path: Path, rows: list[tuple[object, str, str]]) -> Path:
    """A tiny Kaggle-layout CSV from (emotion, pixels, Usage) rows, written as given (bad rows included)."""
    lines = ["emotion,pixels,Usage"] + [f"{e},{p},{u}" for e, p, u in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
