"""The config check helpers name the one key that failed, its value and what is allowed."""

from __future__ import annotations

import pytest

from stack_common.checks import (
    require_at_least,
    require_choice,
    require_fraction,
    require_non_negative,
    require_not_empty,
    require_positive,
    require_range,
)
from stack_common.errors import ConfigError


@pytest.mark.parametrize(
    "check, message",
    [
        (
            lambda: require_choice("beam.runner", "nope", ("direct", "flink")),
            "beam.runner='nope' is not one of direct, flink",
        ),
        (
            lambda: require_choice("trainer.fp8", "x", ("e4m3",), allow_none=True),
            "trainer.fp8='x' is not one of e4m3 (or null)",
        ),
        (lambda: require_positive("optimizer.lr", 0.0), "optimizer.lr=0.0 must be positive"),
        (lambda: require_non_negative("num_shards", -1), "num_shards=-1 must be >= 0"),
        (lambda: require_at_least("rl.group_size", 1, 2), "rl.group_size=1 must be >= 2"),
        (lambda: require_range("rl.top_p", 0, 0, 1, low_inclusive=False), "rl.top_p=0 must lie in (0, 1]"),
        (lambda: require_range("x", 9, high=8), "x=9 must lie in (-inf, 8]"),
        (lambda: require_fraction("language.min_score", 1.5), "language.min_score=1.5 must lie in [0, 1]"),
        (
            lambda: require_not_empty("sft_data.paths", [], "give JSONL files"),
            "sft_data.paths is empty: give JSONL files",
        ),
    ],
)
def test_a_failed_check_names_the_key_the_value_and_what_is_allowed(check, message):
    with pytest.raises(ConfigError) as error:
        check()
    assert str(error.value) == message


def test_values_inside_the_bounds_pass():
    require_choice("trainer.fp8", None, ("e4m3",), allow_none=True)
    require_choice("rl.kl_estimator", "k3", {"k1": 1, "k3": 3})  # a registry's keys
    require_range("rl.top_p", 1, 0, 1, low_inclusive=False)
    require_at_least("rl.group_size", 2, 2)
    require_not_empty("corpus.work_dir", "outputs")
