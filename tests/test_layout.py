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


#: the one reader of each ``manifest.json``: a prepared dataset's, an export's
MANIFEST_OWNERS = {
    "data_pipeline/dataset.py:DataManifest.read",
    "search/serving/export.py:ExportManifest.read",
}


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """The nodes of a def (or module) that are not inside a nested def or class."""
    found, stack = [], list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        found.append(n)
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(n))
    return found


def _word(n: ast.AST) -> str:
    """An identifier, attribute or string in the code, else ``""``."""
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
        return n.value
    return n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""


def _spells(n: ast.AST, names: tuple[str, ...]) -> bool:
    """A name in ``names``, or a path string ending in one (``"checkpoint_*/trial.json"``)."""
    w = _word(n)
    path = isinstance(n, ast.Constant) and " " not in w
    return w in names or (path and w.endswith(tuple(f"/{x}" for x in names)))


def _is_json_parse(n: ast.AST, calls: tuple[str, ...] = ("load", "loads")) -> bool:
    return (
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in calls
        and _word(n.func.value) == "json"
    )


MANIFEST_NAMES = ("manifest.json", "MANIFEST_FILE")
TRIAL_NAMES = ("trial.json", "TRIAL_FILE")


def _manifest_parsers(
    source: str,
    where: str,
    names: tuple[str, ...] = MANIFEST_NAMES,
    stem: str | None = "manifest",
    write: bool = False,
) -> list[str]:
    """``where:Qualified.name`` of each def (or ``<module>``) in ``source`` that parses a record (with
    ``write``, also serialises one): a ``json.load(s)`` whose argument names it (contains ``stem``, or a
    variable bound to such: ``p = root / ...``, ``with open(...) as f``), or one in a def that spells the
    file name (``names``). A nested def counts on its own."""
    found = []
    calls = ("load", "loads", "dump", "dumps") if write else ("load", "loads")

    def visit(node: ast.AST, qual: str) -> None:
        mine = _own_nodes(node)
        bound: dict[str, list[ast.AST]] = {}  # a variable → what it was assigned
        for n in mine:
            pairs = [(t, n.value) for t in n.targets] if isinstance(n, ast.Assign) else []
            pairs += [(i.optional_vars, i.context_expr) for i in getattr(n, "items", []) if i.optional_vars]
            for target, value in pairs:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bound.setdefault(name.id, []).append(value)
        parses = [n for n in mine if _is_json_parse(n, calls)]
        used = [w for call in parses for w in ast.walk(call)]
        sources = used + [v for w in used if isinstance(w, ast.Name) for v in bound.get(w.id, [])]
        named = any(
            _spells(w, names) or (stem is not None and stem in _word(w).lower())
            for v in sources
            for w in ast.walk(v)
        )
        spells = any(_spells(n, names) for n in mine)
        if named or (parses and spells):
            found.append(f"{where}:{qual or '<module>'}")
        for n in mine:
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(n, f"{qual}.{n.name}" if qual else n.name)

    visit(ast.parse(source), "")
    return found


def test_the_manifest_detector_finds_a_parse():
    snippets = {
        "a": "def a(root):\n    return json.loads((root / 'manifest.json').read_text())\n",
        "b": "def b(manifest_path):\n    with open(manifest_path) as f:\n        return json.load(f)\n",
        "c": "class C:\n    def c(r):\n        p = r / MANIFEST_FILE\n        return json.load(p.open())",
        "d": "raw = json.loads(Path('x/manifest.json').read_text())\n",
    }
    found = [hit for name, src in snippets.items() for hit in _manifest_parsers(src, name)]
    assert found == ["a:a", "b:b", "c:C.c", "d:<module>"]
    trial = (
        "def e(ckpt, manifest):\n    return json.loads((ckpt / 'trial.json').read_text()), manifest.counts"
    )
    assert _manifest_parsers(trial, "e") == []  # a manifest at hand is not a parse of one


def test_each_manifest_json_is_parsed_in_one_place():
    """A dataset's manifest is read by ``DataManifest`` and an export's by ``ExportManifest``; nothing else
    parses either file (tests may, to damage one), and only their modules spell its name."""
    found, spelled = [], set()
    for pkg in ("models", "data_pipeline", "search", "cluster", "benchmarks"):
        for path in (ROOT / pkg).rglob("*.py"):
            source, where = path.read_text(), path.relative_to(ROOT).as_posix()
            found += _manifest_parsers(source, where)
            if any(_word(n) == "manifest.json" for n in ast.walk(ast.parse(source))):
                spelled.add(where)
    assert sorted(found) == sorted(MANIFEST_OWNERS)
    assert spelled == {owner.split(":")[0] for owner in MANIFEST_OWNERS}


def test_the_trial_file_detector_finds_a_parse_and_a_write():
    snippets = {
        "a": "def a(ckpt):\n    return json.loads((ckpt / TRIAL_FILE).read_text())['best_val_acc']\n",
        "b": "def b(run):\n    for f in run.glob('*/trial.json'):\n        s = json.loads(f.read_text())\n",
        "c": "def c(out, trial):\n    (out / TRIAL_FILE).write_text(json.dumps(trial, indent=2))\n",
        "d": "def d(out, summary):\n    (out / 'summary.json').write_text(json.dumps(summary))\n",
    }
    found = [hit for n, src in snippets.items() for hit in _manifest_parsers(src, n, TRIAL_NAMES, None, True)]
    assert found == ["a:a", "b:b", "c:c"]


def test_trial_json_is_read_and_written_only_by_trial_checkpoint():
    """Every stage reads a checkpoint's record as a typed ``SavedTrial`` through ``TrialCheckpoint`` (whose
    ``read``/``write`` hand the text to ``SavedTrial.from_json``/``to_json``, which never name the file);
    no def that names ``trial.json`` parses or serialises JSON itself (that file's layout was once written
    in two places and parsed in eight)."""
    found = []
    for pkg in ("models", "data_pipeline", "search", "cluster", "benchmarks"):
        for path in (ROOT / pkg).rglob("*.py"):
            source, where = path.read_text(), path.relative_to(ROOT).as_posix()
            found += _manifest_parsers(source, where, TRIAL_NAMES, None, write=True)
    assert found == []
