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


def _module_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Every module of the four packages → the modules of ours it imports (top level or inside a function),
    and every private name imported from another module."""
    pkgs = ("models", "data_pipeline", "search", "cluster")

    def name(p: Path) -> str:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    mods = {name(p): p for pkg in pkgs for p in (ROOT / pkg).rglob("*.py")}
    graph, private = {}, []
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] not in pkgs:
                    continue
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in mods else node.module)
                    if full not in mods and alias.name.startswith("_"):
                        private.append((mod, node.module, alias.name))
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] in pkgs}
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph, private


def test_no_import_circles_and_no_private_names_across_modules():
    graph, private = _module_graph()
    assert not private, private
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        seen[mod] = 1
        for dep in sorted(graph[mod]):
            assert seen.get(dep) != 1, "import circle: " + " → ".join([*path, mod, dep])
            if dep not in seen:
                visit(dep, [*path, mod])
        seen[mod] = 2

    for mod in sorted(graph):
        if mod not in seen:
            visit(mod, [])


def test_data_flows_down_one_way():
    """models → nothing of ours; data_pipeline → models at most; search → both; cluster → search."""
    graph, _ = _module_graph()
    allowed = {
        "models": {"models"},
        "data_pipeline": {"models", "data_pipeline"},
        "search": {"models", "data_pipeline", "search"},
        "cluster": {"models", "data_pipeline", "search", "cluster"},
    }
    top = {m: m.split(".")[0] for m in graph}
    wrong = [(m, d) for m, deps in graph.items() for d in deps if top[d] not in allowed[top[m]]]
    assert not wrong, wrong


#: search/'s stages, lowest first (README "Layout"): a stage imports only stages before it
STAGES = (
    "metrics", "spec", "trial", "tracking", "tuning", "ensemble", "serving", "reporting", "pipeline", "cli",
)  # fmt: skip


def test_search_stages_import_only_earlier_stages():
    graph, _ = _module_graph()
    rank = {s: i for i, s in enumerate(STAGES)}

    def stage(mod: str) -> str | None:
        parts = mod.split(".")
        return parts[1] if parts[0] == "search" and len(parts) > 1 else None

    assert {stage(m) for m in graph} - {None} <= set(STAGES), "a search/ stage missing from STAGES"
    upward = [
        (m, d) for m, deps in graph.items() for d in deps
        if stage(m) and stage(d) and rank[stage(d)] > rank[stage(m)]
    ]  # fmt: skip
    assert not upward, upward


def test_benchmarks_import_no_private_names_of_ours():
    ours = ("models", "data_pipeline", "search", "cluster")
    private = [
        (p.name, node.module, a.name)
        for p in (ROOT / "benchmarks").glob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours
        for a in node.names
        if a.name.startswith("_")
    ]
    assert not private, private
