"""What the code itself must never do (static checks, milliseconds), and docs/RELIABILITY.md kept honest."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "deepfake_fastai").glob("*.py"))
NEVER = {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "os.system", "os.popen", "eval", "exec",
         "pickle.load", "pickle.loads", "subprocess.getoutput", "subprocess.getstatusoutput"}
UNPICKLER = "manifest.py"  # the one module that unpickles, right after checking the file against the manifest
CODEGEN = "em_kernels.py"  # the one module that runs generated source: its own text (em_kernels.source), no input


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_yaml_is_safe_loaded_and_no_shell_command_is_built_from_strings():
    found = []
    for path in SOURCES:
        for node, name in _calls(path):
            where = f"{path.name}:{node.lineno} {name}"
            allowed = (path.name, name) in {(UNPICKLER, "pickle.loads"), (CODEGEN, "exec")}
            if allowed and name == "exec" and not ast.unparse(node.args[0]).startswith("compile(source("):
                found.append(f"{where}: exec only of the module's own generated source")
            if name in NEVER and not allowed:
                found.append(f"{where}: never call it")
            if any(k.arg == "shell" for k in node.keywords):
                found.append(f"{where}: shell=")
            if name.startswith("subprocess.") and node.args and not isinstance(node.args[0], ast.List | ast.Tuple):
                found.append(f"{where}: the command must be a list of arguments, not a string")
    assert not found, found
    assert any(name == "yaml.safe_load" for path in SOURCES for _, name in _calls(path))


def _table_ids(doc: Path) -> list[str]:
    return re.findall(r"`(tests/test_\w+\.py::test_\w+)`", doc.read_text())


def test_every_test_named_in_the_reliability_table_exists():
    ids = _table_ids(REPO / "docs" / "RELIABILITY.md")
    assert len(ids) >= 40
    missing = []
    for test_id in ids:
        file, name = test_id.split("::")
        tree = ast.parse((REPO / file).read_text()) if (REPO / file).is_file() else ast.Module(body=[])
        if name not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
            missing.append(test_id)
    assert not missing, f"docs/RELIABILITY.md names tests that do not exist: {missing}"
