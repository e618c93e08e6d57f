"""Are two answers the same? The cascade, cheapest first, and where each step runs.

In the caller's process (no sympy, bounded by string length):
  1. normalised strings equal (`normalization.normalize_answer`)               -> equal
  2. structure (`structure.parse_structure`): tuples, sets, intervals, `\\pm`, equations; leaves:
     numbers compared exactly / within tolerance (`normalization.numbers_match`), word answers
     compared as normalised text                                                -> decided
In a worker process of `worker_pool.DeadlineWorkerPool`, only when a leaf needs it:
  3. the same structure walk with sympy leaves (`symbolic.symbolic_scalar_equal`) under a hard
     deadline; a timeout counts as not equal.

`AnswerChecker.check_batch` returns one `CheckResult` per pair: EQUAL, NOT_EQUAL, or
UNPARSEABLE_REFERENCE (the reference itself is empty or not readable as math or words: a reward
is then None, not 0). Verdicts are cached per (prediction, reference) so a GRPO group's
duplicate answers cost one check.

Cost: O(answer length) per pair in-process; pairs that need sympy cost a pipe round trip plus
the sympy work, spread over the pool's processes.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from megatron_recipes.rewards.normalization import (
    is_text_answer,
    normalize_answer,
    normalize_text,
    numbers_match,
    parse_number,
)
from megatron_recipes.rewards.structure import AnswerNode, NeedsSymbolic, compare_structures, parse_structure

EQUAL = "equal"
NOT_EQUAL = "not_equal"
UNPARSEABLE_REFERENCE = "unparseable_reference"


@dataclass(frozen=True)
class CheckOptions:
    """How lenient a numeric comparison is; its defaults are the `answer_check` section's
    (rewards/config.py)."""

    # Float noise only (0.30000000000000004 == 3/10): relative, so 1/2^99 != 1/2^98.
    relative_tolerance: float = 1e-9
    # A decimal may stand for a fraction without a finite expansion or an irrational constant if it
    # shows the reference's digits rounded or truncated (0.333 for 1/3, 1.414 for sqrt 2)...
    approximate_decimals: bool = True
    # ... and has at least this many significant digits (0.3 is not 1/3).
    min_significant_digits: int = 3

    def as_list(self) -> list:
        return [self.relative_tolerance, self.approximate_decimals, self.min_significant_digits]


def _cheap_scalar_equal(options: CheckOptions):
    def equal(predicted: str, reference: str) -> bool:
        if predicted == reference:
            return True
        predicted_number, reference_number = parse_number(predicted), parse_number(reference)
        if predicted_number is not None and reference_number is not None:
            return numbers_match(
                predicted_number,
                reference_number,
                predicted,
                options.relative_tolerance,
                options.approximate_decimals,
                options.min_significant_digits,
            )
        if is_text_answer(predicted) or is_text_answer(reference):
            return normalize_text(predicted) == normalize_text(reference)
        raise NeedsSymbolic

    return equal


def cheap_verdict(predicted: str, reference: str, options: CheckOptions) -> bool | None:
    """In-process decision on two normalised answers, or None when sympy is needed."""
    if predicted == reference:
        return True
    if not predicted:
        return False
    try:
        return compare_structures(_structure(predicted), _structure(reference), _cheap_scalar_equal(options))
    except NeedsSymbolic:
        return None


@functools.lru_cache(maxsize=16384)
def _structure(normalized: str) -> AnswerNode:
    return parse_structure(normalized)


def _leaves(node: AnswerNode):
    if node.kind == "scalar":
        yield node.text
    for item in node.items:
        yield from _leaves(item)


def cheap_reference_status(reference: str) -> bool | None:
    """True: readable without sympy (numbers, words); False: empty; None: ask a worker."""
    if not reference:
        return False
    if reference.count("{") != reference.count("}"):
        return False
    leaves = list(_leaves(_structure(reference)))
    if not leaves or any(not leaf for leaf in leaves):
        return False
    if all(parse_number(leaf) is not None or is_text_answer(leaf) for leaf in leaves):
        return True
    return None


# ------------------------------------------------------------------------------------------
# Worker side (imported by worker processes only: it pulls in sympy)
# ------------------------------------------------------------------------------------------


def handle_worker_task(task: dict) -> Any:
    from megatron_recipes.rewards import symbolic

    operation = task["op"]
    if operation == "compare":
        tolerance, approximate, min_digits = task["options"]
        options = CheckOptions(tolerance, approximate, min_digits)
        cheap = _cheap_scalar_equal(options)

        def scalar_equal(predicted: str, reference: str) -> bool:
            try:
                return cheap(predicted, reference)
            except NeedsSymbolic:
                return symbolic.symbolic_scalar_equal(predicted, reference, tolerance, min_digits, approximate)

        return compare_structures(_structure(task["predicted"]), _structure(task["reference"]), scalar_equal)
    if operation == "parse_reference":
        for leaf in _leaves(_structure(task["reference"])):
            if parse_number(leaf) is not None or is_text_answer(leaf):
                continue
            try:
                symbolic.to_sympy(leaf)
            except symbolic.Pathological:
                continue  # readable, only too big to evaluate: compared by identity
            except symbolic.ParseFailure:
                return False
        return True
    if operation == "sleep":  # for tests of the deadline machinery
        import time

        time.sleep(float(task["seconds"]))
        return True
    if operation == "evaluate":  # for tests: an arbitrary sympy computation under the deadline
        return str(symbolic.to_sympy(task["expression"]).doit())
    raise ValueError(f"unknown worker operation {operation!r}")


# ------------------------------------------------------------------------------------------
# The caller's side
# ------------------------------------------------------------------------------------------


class _BoundedCache:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)


class AnswerChecker:
    """Batched answer equivalence with sympy work in a deadline pool.

    Args:
        options: numeric leniency (CheckOptions).
        pool: a `DeadlineWorkerPool`; None uses the process-wide default pool.
        timeout_s: per-check deadline for the symbolic step (None: the pool's).
        cache_size: verdicts kept per (prediction, reference).
    """

    def __init__(
        self, options: CheckOptions | None = None, pool=None, timeout_s: float | None = None, cache_size: int = 65536
    ):
        self.options = options or CheckOptions()
        self._pool = pool
        self.timeout_s = timeout_s
        self._verdicts = _BoundedCache(cache_size)
        self._references = _BoundedCache(cache_size)

    @property
    def pool(self):
        if self._pool is None:
            from megatron_recipes.rewards.worker_pool import default_pool

            self._pool = default_pool()
        return self._pool

    def _reference_statuses(self, references: Sequence[str]) -> dict[str, bool]:
        statuses: dict[str, bool] = {}
        pending = []
        for reference in dict.fromkeys(references):
            cached = self._references.get(reference)
            if cached is not None:
                statuses[reference] = cached
                continue
            status = cheap_reference_status(reference)
            if status is None:
                pending.append(reference)
            else:
                statuses[reference] = status
                self._references.put(reference, status)
        if pending:
            results = self.pool.run([{"op": "parse_reference", "reference": r} for r in pending], self.timeout_s)
            for reference, result in zip(pending, results):
                status = result is True
                statuses[reference] = status
                if not isinstance(result, str):  # a timeout is not cached: it may pass next time
                    self._references.put(reference, status)
        return statuses

    def check_batch(self, predictions: Sequence[str | None], references: Sequence[str | None]) -> list[str]:
        """EQUAL / NOT_EQUAL / UNPARSEABLE_REFERENCE for each (prediction, reference) pair.

        predictions: extracted answers (None when the completion had none: NOT_EQUAL).
        references: reference final answers (LaTeX or plain; None or "" is unparseable).
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        normalized_references = [normalize_answer(r) if r is not None else "" for r in references]
        normalized_predictions = [normalize_answer(p) if p is not None else "" for p in predictions]
        statuses = self._reference_statuses(normalized_references)
        results: list[str | None] = [None] * len(predictions)
        symbolic_pairs: dict[tuple[str, str], list[int]] = {}
        for index, (predicted, reference) in enumerate(zip(normalized_predictions, normalized_references)):
            if not statuses[reference]:
                results[index] = UNPARSEABLE_REFERENCE
                continue
            if not predicted:
                results[index] = NOT_EQUAL
                continue
            key = (predicted, reference)
            cached = self._verdicts.get(key)
            if cached is None:
                verdict = cheap_verdict(predicted, reference, self.options)
                if verdict is not None:
                    cached = EQUAL if verdict else NOT_EQUAL
                    self._verdicts.put(key, cached)
            if cached is not None:
                results[index] = cached
            else:
                symbolic_pairs.setdefault(key, []).append(index)
        if symbolic_pairs:
            keys = list(symbolic_pairs)
            tasks = [
                {"op": "compare", "predicted": p, "reference": r, "options": self.options.as_list()} for p, r in keys
            ]
            for key, outcome in zip(keys, self.pool.run(tasks, self.timeout_s)):
                verdict = EQUAL if outcome is True else NOT_EQUAL
                if isinstance(outcome, bool):  # timeouts and failures are not cached
                    self._verdicts.put(key, verdict)
                for index in symbolic_pairs[key]:
                    results[index] = verdict
        return results  # type: ignore[return-value]

    def equal(self, prediction: str | None, reference: str | None) -> bool:
        return self.check_batch([prediction], [reference])[0] == EQUAL


_DEFAULT_CHECKER: AnswerChecker | None = None


def answers_equal(prediction: str | None, reference: str | None) -> bool:
    """Convenience: one pair through the process-wide default checker."""
    global _DEFAULT_CHECKER
    if _DEFAULT_CHECKER is None:
        _DEFAULT_CHECKER = AnswerChecker()
    return _DEFAULT_CHECKER.equal(prediction, reference)
