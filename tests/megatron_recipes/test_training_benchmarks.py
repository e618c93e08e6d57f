"""The benchmark scripts run and print one JSON line (figures are not asserted: shared machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, subprocess_env


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


@pytest.mark.integration
def test_gpu_benchmark_refuses_without_cuda_and_its_measurement_runs_on_the_cpu():
    refused = run_script("benchmarks/train_step_gpu.py")
    assert refused.returncode == 2
    assert "needs a CUDA device" in json_line(refused.stdout)["not_run"]
    smoke = run_script("benchmarks/train_step_gpu.py", "--cpu-smoke")
    assert smoke.returncode == 0, smoke.stderr[-2000:]
    local = json_line(smoke.stdout)["results"]["local"]
    assert local["layer_spec"] == "local" and local["tokens_per_second_per_gpu"] > 0


@pytest.mark.integration
def test_cpu_step_benchmark_prints_one_comparison():
    result = run_script("benchmarks/train_step.py", "--warmup", "1", "--steps", "4", "--rounds", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json_line(result.stdout)
    assert figures["parameters"]["recipe"] == figures["parameters"]["plain_pytorch"]
    assert figures["recipe_step_ms"] > 0 and figures["plain_pytorch_step_ms"] > 0
