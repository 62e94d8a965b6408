"""Architecture rules checked from the source: imports point one way, and one module owns the run folder.

The import graph is built with ``ast`` from every module of the package, imports inside functions included
(a lazy import is still an import), relative imports resolved; any cycle fails the test, named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake_fastai"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Package modules one import statement names (``from . import x`` names the module x when there is one)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
    else:
        return set()
    found = set()
    for name in names:
        while name and name not in known:  # "pkg.mod.attr" -> "pkg.mod"
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its source (module level or inside functions)."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {t for node in ast.walk(tree) for t in _imported(node, module, is_package, known)} - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, modules in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "deepfake_fastai.config" in graph["deepfake_fastai.train"]
    assert "deepfake_fastai.learner" in graph["deepfake_fastai.train"]  # imported inside a function


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)} (move the shared name down, see docs/ARCHITECTURE.md)"


def _run_folder_names() -> set[str]:
    from deepfake_fastai import runfolder

    files = {runfolder.CONFIG, runfolder.STATUS, runfolder.METRICS, runfolder.MANIFEST, runfolder.HISTORY,
             runfolder.LEARNER, runfolder.MODEL, runfolder.TRAIN_LOG, runfolder.WORKER_LOG}
    return files | {f(p) for p in runfolder.PARTS for f in (runfolder.ids_file, runfolder.probs_file)}


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant of a module except docstrings (prose may name a file; code must not)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def run_folder_names_outside_contract(root: Path = PACKAGE) -> list[str]:
    """"module:line: name" for every string in the package, outside runfolder.py, that names a run-folder file."""
    names = _run_folder_names()
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "runfolder.py":
            continue
        for node in _strings(ast.parse(path.read_text(), str(path))):
            found += [f"{path.name}:{node.lineno}: {name}" for name in sorted(names) if name in node.value]
    return found


def test_only_the_contract_module_names_run_folder_files():
    found = run_folder_names_outside_contract()
    assert not found, "run-folder file names outside runfolder.py (use its constants and readers):\n" + "\n".join(found)


def test_the_file_name_check_sees_a_name(tmp_path):
    (tmp_path / "stage.py").write_text('"""Docstrings may say metrics.json."""\nPATH = "runs/x/valid_ids.csv"\n')
    assert run_folder_names_outside_contract(tmp_path) == ["stage.py:2: valid_ids.csv"]
