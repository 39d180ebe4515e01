"""The layering the code relies on: models, deploy <- compress <- bench, and reports render from results alone."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, forbidden", [("models", {"bench", "compress", "deploy"}), ("deploy", {"bench", "compress", "models"}),
                                                ("compress", {"bench"})])
def test_imports_run_one_way(package, forbidden):
    offenders = {str(p.relative_to(REPO)): sorted(_imported_packages(p) & forbidden) for p in (REPO / package).glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_reports_render_without_the_runner_models_or_torch():
    code = ("import sys, bench.report, bench.plots; "
            "print(sorted(m for m in ('bench.study', 'models', 'timm', 'torch', 'compress') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# compress/ from the bottom up: a module may import only modules before it (the package's docstring says why).
COMPRESS_ORDER = ("layers", "rank", "decompose", "options", "report", "factorizations", "targets", "factorize", "prune", "sparsity",
                  "quantize",
                  "penalty", "methods", "__init__", "search")


def _compress_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "compress":
            # `from compress import decompose` imports a module; `from compress import apply` the package's own names
            names |= {alias.name if alias.name in COMPRESS_ORDER else "__init__" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "compress":
                    names.add("__init__")
                elif alias.name.startswith("compress."):
                    names.add(alias.name.split(".")[1])
    return names


def test_imports_inside_compress_run_one_way():
    files = {p.stem: p for p in (REPO / "compress").glob("*.py")}
    assert set(files) == set(COMPRESS_ORDER), "a new compress module needs its place in COMPRESS_ORDER"
    backwards = {}
    for name, path in files.items():
        later = {other for other in _compress_imports(path) if COMPRESS_ORDER.index(other) >= COMPRESS_ORDER.index(name)}
        if later:
            backwards[name] = sorted(later)
    assert backwards == {}


def test_the_order_check_catches_a_backward_import(tmp_path):
    late = tmp_path / "targets.py"
    late.write_text("from compress.methods import METHODS\nfrom compress import apply\n")
    assert _compress_imports(late) == {"methods", "__init__"}
    assert COMPRESS_ORDER.index("methods") > COMPRESS_ORDER.index("targets")
