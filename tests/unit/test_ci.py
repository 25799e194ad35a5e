"""CI's report of a failed run (.ci/failures.py): what failed comes last, with the disk's free space."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_failed_runs_failures_and_errors_are_printed_by_name_with_what_they_said(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    raise OSError(28, 'No space left on device')\n"
        "def test_passes():\n"
        "    pass\n"
        "def test_fails():\n"
        "    assert 1 == 2, 'one is not two'\n"
        "def test_errors(broken):\n"
        "    pass\n"
    )
    junit = tmp_path / "junit.xml"
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
         f"--junitxml={junit}", "test_some.py"],
        cwd=tmp_path, capture_output=True, text=True,
        # CI's own PYTEST_ADDOPTS names its JUnit file: this run must not write there
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )
    assert ran.returncode == 1, ran.stdout

    shown = subprocess.run([sys.executable, ROOT / ".ci" / "failures.py", junit],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "GiB free" in shown
    assert "3 tests, 1 failures, 1 errors, 0 skipped" in shown
    lines = shown.splitlines()
    assert any(line.startswith("FAILURE test_some::test_fails: ") and "one is not two" in line for line in lines), shown
    assert any(line.startswith("ERROR   test_some::test_errors: ") and "No space left" in line for line in lines), shown
    assert "test_passes" not in shown


def test_no_junit_file_is_said_not_raised(tmp_path):
    shown = subprocess.run([sys.executable, ROOT / ".ci" / "failures.py", tmp_path / "missing.xml"],
                           capture_output=True, text=True, check=True).stdout
    assert "no JUnit XML" in shown


def test_the_files_handed_out_first_are_the_suites_own():
    # a name here that no longer is a test file would leave its file in collection order, unnoticed
    from ..conftest import SLOWEST_FIRST

    assert all((ROOT / "tests" / name).is_file() and Path(name).name.startswith("test_") for name in SLOWEST_FIRST)
    assert len(set(SLOWEST_FIRST)) == len(SLOWEST_FIRST)
