"""The learning-rate schedules as pure functions, and the graceful-stop flag (no process group)."""

from __future__ import annotations

import os
import signal

import pytest

from megatron_recipes.training.config import OptimizerConfig
from megatron_recipes.training.optimizer import learning_rate_at
from megatron_recipes.training.signals import GracefulStop


def test_deepseekmath_multistep_schedule():
    settings = OptimizerConfig(lr=4.2e-4, warmup_steps=2000)
    total = 50_000
    assert learning_rate_at(0, settings, total) == 0.0
    assert learning_rate_at(1000, settings, total) == pytest.approx(2.1e-4)
    assert learning_rate_at(2000, settings, total) == pytest.approx(4.2e-4)
    assert learning_rate_at(39_999, settings, total) == pytest.approx(4.2e-4)
    assert learning_rate_at(40_000, settings, total) == pytest.approx(0.316 * 4.2e-4)  # 80% of training
    assert learning_rate_at(44_999, settings, total) == pytest.approx(0.316 * 4.2e-4)
    assert learning_rate_at(45_000, settings, total) == pytest.approx(0.1 * 4.2e-4)  # 90%
    assert learning_rate_at(50_000, settings, total) == pytest.approx(0.1 * 4.2e-4)


def test_cosine_and_linear_schedules():
    cosine = OptimizerConfig(lr=1e-3, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate_at(10, cosine, 110) == pytest.approx(1e-3)
    assert learning_rate_at(60, cosine, 110) == pytest.approx(0.55e-3)  # halfway: mean of peak and floor
    assert learning_rate_at(110, cosine, 110) == pytest.approx(1e-4)
    assert learning_rate_at(500, cosine, 110) == pytest.approx(1e-4)
    linear = OptimizerConfig(lr=1e-3, warmup_steps=0, lr_schedule="linear", min_lr_ratio=0.0)
    assert learning_rate_at(25, linear, 100) == pytest.approx(0.75e-3)
    constant = OptimizerConfig(lr=1e-3, warmup_steps=4, lr_schedule="constant")
    assert learning_rate_at(2, constant, 10) == pytest.approx(0.5e-3) and learning_rate_at(9, constant, 10) == 1e-3


def test_signal_sets_a_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    stop = GracefulStop(["SIGTERM", "SIGUSR1"])
    try:
        assert stop.local_reason() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.local_reason() == "signal"
        assert stop.agreed_reason() == ("signal", "SIGUSR1")  # no process group: this process decides
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_sigterm_too():
    stop = GracefulStop(["SIGTERM"])
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed_reason() == ("signal", "SIGTERM")
    finally:
        stop.restore()


def test_wall_time_budget():
    stop = GracefulStop([], exit_after_minutes=0.0)
    assert stop.agreed_reason() == ("duration", None)
    assert GracefulStop([], exit_after_minutes=60.0).local_reason() is None
