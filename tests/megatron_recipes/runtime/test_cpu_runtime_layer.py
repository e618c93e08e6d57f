"""The CPU runtime layer and the single-process training core, in a fresh process.

cpu_runtime_cases.py installs the layer (process-wide), so it runs as its own pytest process;
a failing case shows up here with its name and assertion.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import pytest_in_fresh_process

CASES = Path(__file__).with_name("cpu_runtime_cases.py")


def test_cpu_runtime_cases_in_a_fresh_process(tmp_path):
    result, counts = pytest_in_fresh_process(CASES, tmp_path / "report.xml", OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert counts["tests"] > counts["skipped"] and counts["failures"] == counts["errors"] == 0, counts
