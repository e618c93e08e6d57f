"""Evaluation metrics over n samples per problem.

  pass@1   the mean per-sample correctness (R1 reports pass@1 this way: k samples at temperature
           T, averaged); with one greedy sample it is the usual accuracy
  pass@k   the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
           1 - C(n - c, k) / C(n, k)
  cons@k   majority voting (self-consistency) over the first k samples: the most frequent answer
           wins (answers grouped by their normalised form and exact value, choice letters as
           they are; a tie goes to the answer seen first) and is scored

Vectorised forms work on all problems at once (numpy); beside each is a small readable reference
(`*_reference`) the tests compare them with.

Cost: pass@k O(problems + n); cons@k O(problems x k^2) (k <= 64 in the papers).
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from math import comb
from typing import Hashable, Sequence

import numpy as np

from megatron_recipes.rewards.normalization import normalize_answer, parse_number


def pass_at_k(samples: int, correct: int, k: int) -> float:
    if not 0 <= correct <= samples or not 1 <= k <= samples:
        raise ValueError(
            f"pass@k needs 0 <= correct <= samples and 1 <= k <= samples (got n={samples}, c={correct}, k={k})"
        )
    if samples - correct < k:
        return 1.0
    return 1.0 - comb(samples - correct, k) / comb(samples, k)


def pass_at_k_vector(samples: Sequence[int], correct: Sequence[int], k: int) -> np.ndarray:
    """pass@k of every problem at once: 1 - prod_{i=n-c+1}^{n} (1 - k / i), summed in logs."""
    n = np.asarray(samples, dtype=np.int64)
    c = np.asarray(correct, dtype=np.int64)
    if n.size == 0:
        return np.zeros(0)
    if (c < 0).any() or (c > n).any() or k < 1 or (n < k).any():
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (k={k})")
    if k == 1:  # exactly the fraction of correct samples
        return c / n
    # prefix[i] = sum_{j=k+1}^{i} log(1 - k/j); only indices > k are used (n - c >= k there).
    indices = np.arange(int(n.max()) + 1, dtype=np.float64)
    terms = np.zeros_like(indices)
    terms[k + 1 :] = np.log1p(-k / indices[k + 1 :])
    prefix = np.cumsum(terms)
    result = np.ones(n.shape, dtype=np.float64)
    open_ = n - c >= k
    result[open_] = 1.0 - np.exp(prefix[n[open_]] - prefix[(n - c)[open_]])
    return result


def pass_at_k_reference(flags: Sequence[bool], k: int) -> float:
    """The fraction of k-subsets of the samples holding at least one correct sample."""
    subsets = list(combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in subset) for subset in subsets) / len(subsets)


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


def consensus_at_k(keys: Sequence[Sequence[Hashable | None]], flags: Sequence[Sequence[bool]], k: int) -> np.ndarray:
    """cons@k of every problem: 1.0 where the majority answer of the first k samples is right.
    keys[p][i]: sample i's answer key (None: no answer); flags[p][i]: its correctness."""
    if not keys:
        return np.zeros(0)
    codes = np.full((len(keys), k), -1, dtype=np.int64)
    right = np.zeros((len(keys), k), dtype=bool)
    for row, (problem_keys, problem_flags) in enumerate(zip(keys, flags)):
        if len(problem_keys) < k:
            raise ValueError(f"cons@{k} needs {k} samples per problem (problem {row} has {len(problem_keys)})")
        numbering: dict = {}
        for column in range(k):
            key = problem_keys[column]
            if key is not None:
                codes[row, column] = numbering.setdefault(key, len(numbering))
        right[row] = np.asarray(problem_flags[:k], dtype=bool)
    valid = codes >= 0
    same = (codes[:, :, None] == codes[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    votes = same.sum(axis=2)  # [problems, k]: how many samples share sample i's answer
    best = votes.max(axis=1)
    chosen = np.argmax(votes == best[:, None], axis=1)  # the first sample with the most votes
    return (right[np.arange(len(keys)), chosen] & (best > 0)).astype(np.float64)


def consensus_reference(keys: Sequence[Hashable | None], flags: Sequence[bool], k: int) -> float:
    """cons@k of one problem, spelled out."""
    counts = Counter(key for key in keys[:k] if key is not None)
    if not counts:
        return 0.0
    most = max(counts.values())
    first = next(i for i, key in enumerate(keys[:k]) if key is not None and counts[key] == most)
    return float(flags[first])


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if len(values) else 0.0
