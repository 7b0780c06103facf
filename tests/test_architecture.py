"""The architecture's rules (design section 2), so that the shape cannot drift back unseen:
the import-linter contracts (.importlinter), no import circle between modules, no module past
400 lines, and function-level imports of our own modules kept few and explained."""
from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import grimp

from videojobs.errors import ErrorCode

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = ("videojobs", "inference", "config")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LEVEL_IMPORTS = 10
# Through these alone inference reaches videojobs (design section 2).
INFERENCE_MAY_IMPORT = {"videojobs.services", "videojobs.params", "videojobs.errors"}


def _python_files(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_contract_forbids_every_other_part_of_videojobs_to_inference():
    # The forbidden list is explicit (import-linter has no "all but"): a new part of videojobs
    # must be added to it, or consciously allowed here.
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    section = parser["importlinter:contract:inference-reaches-videojobs-through-services-params-errors"]
    forbidden = {line.strip() for line in section["forbidden_modules"].splitlines() if line.strip()}
    parts = {f"videojobs.{p.stem if p.suffix == '.py' else p.name}" for p in (ROOT / "videojobs").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert forbidden == parts - INFERENCE_MAY_IMPORT


def test_no_import_circle_between_modules():
    graph = grimp.build_graph(*OUR_PACKAGES, cache_dir=None)
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                circles.append(" -> ".join((module, *chain)))
    assert circles == []


def test_no_module_grows_past_400_lines():
    too_long = {str(p.relative_to(ROOT)): n for p in _python_files(*OUR_PACKAGES, "tests", "bench")
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}


def _function_level_imports(path: Path):
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] in OUR_PACKAGES for name in names):
                yield path.relative_to(ROOT), node.lineno, lines[node.lineno - 1]


def test_function_level_imports_of_our_modules_are_few_and_each_says_why():
    found = sorted({hit for p in _python_files(*OUR_PACKAGES) for hit in _function_level_imports(p)})
    assert len(found) <= MAX_FUNCTION_LEVEL_IMPORTS, "\n".join(f"{p}:{n}" for p, n, _ in found)
    unexplained = [f"{p}:{n}" for p, n, line in found if "#" not in line]
    assert unexplained == []


def test_no_error_code_is_spelled_outside_the_one_enumeration():
    codes = {code.value for code in ErrorCode}
    spelled = []
    for path in _python_files(*OUR_PACKAGES):
        if path == ROOT / "videojobs" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in codes:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    for path in sorted((ROOT / "templates").rglob("*.html")):
        spelled.extend(f"{path.relative_to(ROOT)} {code}" for code in codes if code in path.read_text())
    assert spelled == []
