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
