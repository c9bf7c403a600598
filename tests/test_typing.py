"""The README's import paths are typed: mypy, run on user scripts written the
README's way, passes a correct one and catches every planted mistake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import scalargrad

SCRIPTS = Path(__file__).parent / "typing"


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy's error lines for each script, by file name (one run for both)."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    files = [str(SCRIPTS / "readme_clean.py"), str(SCRIPTS / "readme_planted.py")]
    out = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
            "--follow-imports=silent", "--cache-dir", str(cache), *files,
        ],
        capture_output=True, text=True, cwd=SCRIPTS, timeout=600,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    report: dict[str, list[str]] = {"readme_clean.py": [], "readme_planted.py": []}
    for line in out.stdout.splitlines():
        m = re.match(r"(?:.*[/\\])?(readme_\w+\.py):(\d+): error: ", line)
        assert m, f"unexpected mypy output: {line}"
        report[m.group(1)].append(line)
    return report


def test_mypy_passes_a_correct_readme_script(mypy_report):
    assert mypy_report["readme_clean.py"] == []


def test_mypy_catches_every_planted_mistake_and_nothing_else(mypy_report):
    lines = (SCRIPTS / "readme_planted.py").read_text().splitlines()
    planted = {i for i, line in enumerate(lines, 1) if line.endswith("# mistake")}
    assert len(planted) == 14
    flagged = {int(line.split(":")[1]) for line in mypy_report["readme_planted.py"]}
    assert flagged == planted, mypy_report["readme_planted.py"]


def test_the_typed_names_are_the_run_time_ones(backend):
    """``Value`` and ``Tape`` are what the chosen backend runs, and the correct
    script runs on it."""
    env = dict(os.environ, SCALARGRAD_BACKEND=backend.Value._backend)
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "readme_clean.py")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "24.7041"
    probe = subprocess.run(
        [sys.executable, "-c", "import scalargrad as s; print(s.Value.__module__, s.Tape.__module__)"],  # noqa: E501
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert probe.stdout.split() == [backend.Value.__module__, backend.Tape.__module__]


def test_no_module_level_getattr_hides_names():
    assert "__getattr__" not in vars(scalargrad)
    for name in scalargrad.__all__:
        assert hasattr(scalargrad, name), name
