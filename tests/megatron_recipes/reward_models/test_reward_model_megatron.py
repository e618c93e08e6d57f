"""Reward models on real megatron-core models, in a fresh process (reward_model_cases.py installs
the CPU runtime layer, which is process-wide); a failing case shows up with its name."""

from __future__ import annotations

from pathlib import Path

from tests.support import pytest_in_fresh_process

CASES = Path(__file__).with_name("reward_model_cases.py")


def test_reward_model_cases_in_a_fresh_process(tmp_path):
    result, counts = pytest_in_fresh_process(CASES, tmp_path / "report.xml", OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert counts["tests"] >= 4 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
