"""The code passes the project's linter and formatter (ruff, configured in pyproject.toml: line length, rules)."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([executable, *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_finds_nothing():
    done = _ruff("check", ".", "--output-format", "concise")
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_code_is_formatted_as_ruff_formats_it():
    done = _ruff("format", "--check", ".")
    assert done.returncode == 0, done.stdout[-3000:]
