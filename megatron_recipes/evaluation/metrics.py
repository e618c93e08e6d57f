"""Evaluation metrics over k samples per problem.

pass@k uses the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
pass@k = 1 - C(n - c, k) / C(n, k). maj@k takes the most frequent answer among the first k samples
(answers grouped by their normalised form and exact value; ties go to the earliest) and scores it.

Cost: O(n) per problem.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Sequence

from megatron_recipes.rewards.normalization import normalize_answer, parse_number


def pass_at_k(samples: int, correct: int, k: int) -> float:
    if not 0 <= correct <= samples or not 1 <= k <= samples:
        raise ValueError(
            f"pass@k needs 0 <= correct <= samples and 1 <= k <= samples (got n={samples}, c={correct}, k={k})"
        )
    if samples - correct < k:
        return 1.0
    return 1.0 - comb(samples - correct, k) / comb(samples, k)


def answer_key(answer: str | None) -> str | None:
    """Answers that are surely the same get the same key (spelling and exact value)."""
    if answer is None:
        return None
    normalized = normalize_answer(answer)
    if not normalized:
        return None
    number = parse_number(normalized)
    return f"#{number}" if number is not None else normalized


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of a sample carrying the most frequent answer (None when no sample has one)."""
    keys = [answer_key(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    for index, key in enumerate(keys):
        if key is not None and counts[key] == best:
            return index
    return None


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
