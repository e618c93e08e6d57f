"""The CPU runtime layer and the single-process training core, in a fresh process.

cpu_runtime_cases.py installs the layer (process-wide), so it runs as its own pytest process;
a failing case shows up here with its name and assertion.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT, subprocess_env

CASES = Path(__file__).with_name("cpu_runtime_cases.py")


def test_cpu_runtime_cases_in_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", "-W", "ignore"],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
