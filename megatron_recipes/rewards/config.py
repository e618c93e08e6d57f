"""The `answer_check` section: how lenient answer equivalence is and the symbolic worker pool. The
leniency defaults are CheckOptions' own (equivalence.py), so they live once."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_recipes.rewards.equivalence import CheckOptions
from stack_common.checks import require_at_least, require_positive, require_range


@dataclass
class AnswerCheckConfig:
    """Answer equivalence (megatron_recipes.rewards): leniency and the symbolic worker pool."""

    relative_tolerance: float = CheckOptions.relative_tolerance
    approximate_decimals: bool = CheckOptions.approximate_decimals
    min_significant_digits: int = CheckOptions.min_significant_digits
    # Hard wall-clock limit of one symbolic check; a worker past it is killed and replaced.
    timeout_s: float = 3.0
    num_workers: int = 2

    def validate(self) -> None:
        require_range("answer_check.relative_tolerance", self.relative_tolerance, 0, 1, high_inclusive=False)
        require_at_least("answer_check.min_significant_digits", self.min_significant_digits, 1)
        require_positive("answer_check.timeout_s", self.timeout_s)
        require_at_least("answer_check.num_workers", self.num_workers, 1)

    def options(self) -> CheckOptions:
        return CheckOptions(self.relative_tolerance, self.approximate_decimals, self.min_significant_digits)
