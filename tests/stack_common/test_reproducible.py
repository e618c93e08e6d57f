"""The test suite's processes run with the CPU kernels pinned (stack_common/reproducible.py), so a
training run in a test is the same model on any x86-64 machine: the SFT fixture once gave greedy
accuracy 0.156 on an AVX-512 machine and 0.844 on an AVX2 one from the same seeds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack_common.reproducible import REPRODUCIBLE_CPU_VARIABLES, reproducible_cpu_environment
from tests.support import REPO_ROOT, subprocess_env

PROBE = (
    "import os, torch; "
    "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'), torch.get_num_threads())"
)


def _machine_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return " avx2 " in handle.read().replace("\n", " ")
    except OSError:
        return False


@pytest.mark.skipif(not _machine_has_avx2(), reason="the pinned kernel level is AVX2")
def test_subprocesses_of_the_tests_use_the_pinned_kernels_and_one_thread():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    capability, branch, threads = result.stdout.split()
    # AVX2 even on an AVX-512 machine (torch would pick AVX512 there), MKL's AVX2 branch, one thread.
    assert (capability, branch, threads) == ("AVX2", "AVX2", "1")


def test_the_environment_helper_sets_every_pin_and_the_checkout():
    environment = reproducible_cpu_environment(
        REPO_ROOT, base={"PYTHONPATH": "/elsewhere", "ATEN_CPU_CAPABILITY": "avx512"}
    )
    for name, value in REPRODUCIBLE_CPU_VARIABLES.items():
        assert environment[name] == value
    assert environment["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/elsewhere"]
