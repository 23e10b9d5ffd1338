"""The repository's shape: four installed packages, one-way imports."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _imports(pkg: str) -> set[str]:
    found = set()
    for path in (ROOT / pkg).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_distribution_installs_exactly_the_four_packages():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = cfg["tool"]["setuptools"]["packages"]["find"]["include"]
    top = {p.split(".")[0] for p in find_packages(where=str(ROOT), include=include)}
    assert top == {"search", "models", "data_pipeline", "cluster"}
    assert cfg["project"]["scripts"]["fersearch"] == "search.cli:main"


def test_models_import_nothing_from_search_or_data_pipeline():
    assert not _imports("models") & {"search", "data_pipeline", "cluster"}


def test_data_pipeline_does_not_import_search():
    assert "search" not in _imports("data_pipeline")


def test_torch_pinned_and_no_torchvision_or_timm():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert any(d.startswith("opencv-python-headless==4.") for d in deps)
    assert not [d for d in deps if d.startswith(("torchvision", "timm"))]
    for pkg in ("models", "search", "data_pipeline", "cluster"):
        assert not _imports(pkg) & {"torchvision", "timm"}
