"""The layout the code relies on: models, deploy <- compress <- bench; imports inside a package never run in a circle;
reports render from results alone; folders, functions and module names stay small and unambiguous (issue 30)."""

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "deploy", "compress", "bench")
MAX_MODULES_PER_FOLDER = 12
MAX_FUNCTION_LINES = 80


def _library_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py")) + [REPO / "run_bench.py"]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Return every module ``path`` imports, at any depth of the file (lazy imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from compress import options` imports a module
    return names


def _project_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _library_files()}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


@pytest.mark.parametrize(
    "package, forbidden",
    [("models", {"bench", "compress", "deploy"}), ("deploy", {"bench", "compress", "models"}), ("compress", {"bench"})],
)
def test_imports_run_one_way_between_packages(package, forbidden):
    offenders = {
        str(p.relative_to(REPO)): sorted({m.split(".")[0] for m in _imports(p)} & forbidden)
        for p in (REPO / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """Return one import cycle of ``graph`` (a module importing a package imports its ``__init__``), or []."""
    state, stack = {}, []

    def visit(node) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return stack[stack.index(other) :] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_module_imports_in_a_circle():
    """Imports run one way inside every package: the module graph (lazy imports included, a package's ``__init__`` aside)
    has no cycle, so a newcomer can read each folder from its bottom up."""
    graph = {
        m: {o for o in deps if not (REPO / Path(*o.split(".")) / "__init__.py").is_file()}
        for m, deps in _project_graph().items()
        if not (REPO / Path(*m.split(".")) / "__init__.py").is_file()
    }
    assert _cycle(graph) == []


def test_the_cycle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_reports_import_only_results_side_modules():
    """bench.report renders from results alone: it reads the store and statistics, never training, studies or analysis."""
    graph = _project_graph()
    allowed = ("bench.report", "bench.store", "bench.metrics", "bench.progress")
    offenders = {
        m: sorted(d for d in deps if d.startswith("bench") and not d.startswith(allowed) and d != "bench")
        for m, deps in graph.items()
        if m.startswith("bench.report")
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_reports_render_without_the_runner_models_or_torch():
    code = (
        "import sys, bench.report.render, bench.report.plots; "
        "print(sorted(m for m in ('bench.study', 'models', 'timm', 'torch', 'compress') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_folder_holds_more_than_twelve_modules():
    folders = Counter(p.parent.relative_to(REPO) for p in _library_files() if p.parent != REPO)
    assert {str(f): n for f, n in folders.items() if n > MAX_MODULES_PER_FOLDER} == {}


def _long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_is_over_eighty_lines():
    assert [f for p in _library_files() for f in _long_functions(p)] == []


def test_the_length_check_counts_a_long_function(tmp_path):
    source = tmp_path / "long.py"
    source.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 85 + "    return x\n")
    assert _long_functions(source) == ["long.py:5 long (87 lines)"]


def test_no_module_name_has_two_meanings_across_packages():
    """One name, one idea: no two modules share a name (search, quantize, report and profile each name one thing)."""
    stems = Counter(p.stem for p in _library_files() if p.stem != "__init__")
    packages = Counter(p.parent.name for p in _library_files() if p.name == "__init__.py")
    clashes = {name: count for name, count in (stems + packages).items() if count > 1}
    assert clashes == {}
