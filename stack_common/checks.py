"""Small checks for `validate()` methods. Each names the one key that failed, its value and what is
allowed, so every config message reads the same way:

    require_choice("beam.runner", "nope", RUNNERS)
    -> ConfigError: beam.runner='nope' is not one of direct, dataflow, flink, spark
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stack_common.errors import ConfigError


def require_choice(key: str, value: Any, allowed: Iterable[Any], *, allow_none: bool = False) -> None:
    """`value` must be one of `allowed` (or None when `allow_none`)."""
    if value is None and allow_none:
        return
    choices = tuple(allowed)
    if value not in choices:
        listed = ", ".join(str(choice) for choice in choices)
        raise ConfigError(f"{key}={value!r} is not one of {listed}{' (or null)' if allow_none else ''}")


def require_positive(key: str, value: float | int) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be positive")


def require_non_negative(key: str, value: float | int) -> None:
    require_at_least(key, value, 0)


def require_at_least(key: str, value: float | int, minimum: float | int) -> None:
    """`value >= minimum` (a count that needs at least one, a group that needs two members...)."""
    if value is None or value < minimum:
        raise ConfigError(f"{key}={value!r} must be >= {minimum}")


def require_not_empty(key: str, value: Any, hint: str = "") -> None:
    """A string or list that must hold something; `hint` says what to put there."""
    if not value:
        raise ConfigError(f"{key} is empty{': ' + hint if hint else ''}")


def require_range(
    key: str,
    value: float | int,
    low: float | int | None = None,
    high: float | int | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """`low <= value <= high` (each bound optional; strict where `*_inclusive` is False)."""
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if value is None or below or above:
        left = "" if low is None else ("[" if low_inclusive else "(") + str(low)
        right = "" if high is None else str(high) + ("]" if high_inclusive else ")")
        raise ConfigError(f"{key}={value!r} must lie in {left or '(-inf'}, {right or 'inf)'}")


def require_fraction(key: str, value: float) -> None:
    """A proportion: 0 <= value <= 1."""
    require_range(key, value, 0, 1)
