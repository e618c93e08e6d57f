"""Are two answers the same? The rules, the cascade (cheapest first), and where each step runs.

Rules (each gives the same verdict whichever side is the prediction; `tests/assets/answer_pairs.jsonl`
pins them on MATH/GSM8K-style pairs):
  - A full solution stands for its final answer: the last `\\boxed{}` (or GSM8K `#### N`).
  - Spelling does not count (`normalization.normalize_answer`): `\\dfrac`/`\\frac`, `\\left(`,
    spacing, `$`, `\\text{}` wrappers, units after a number (`5\\text{ cm}`, `12 apples`), dollar
    signs, degree signs (`90^\\circ` is 90; never converted to radians), thousands separators.
  - Numbers are exact (`0.5` is `1/2`, `2\\frac14` is 9/4, `1.5\\times10^3` is 1500); two integers or
    fractions are never "close enough" (1000000001 is not 1000000000). A decimal printed to float
    precision (15+ significant digits) may carry float noise (relative 1e-9). A decimal with at
    least `min_significant_digits` digits equals a number without a finite decimal expansion
    (1/3, `\\sqrt2`, `\\pi`) that it shows rounded or truncated (0.333 and 1/3, 3.14 and pi; not
    0.3, not 3.15).
  - Percent: `p\\%` equals both p and p/100 (`50\\%` is 50 and 0.5); two percents compare as
    written; a number without a percent sign is only itself (50 is not 0.5).
  - Structures (`structure.py`): tuples ordered, sets and bare lists unordered, intervals with
    their brackets, a one-variable inequality is its interval (`x \\geq 2` is `[2,\\infty)`),
    `x = 3` is 3, `\\pm`, matrices by shape.
  - Equations are equal when one's `lhs - rhs` is a non-zero constant multiple of the other's
    (`2x-y+1=0`, `-2x+y-1=0`, `4x-2y+2=0` and `y=2x+1` are one line); inequalities when the multiple
    is positive.
  - Expressions: equal when sympy finds the difference exactly zero; a difference that sympy
    leaves as a non-zero constant is never overruled by probing.
  - Base-b numerals (`1011_2`) equal only base-b numerals of the same value.
  - Limits: an answer longer than MAX_ANSWER_CHARACTERS or nested deeper than
    `normalization.MAX_NESTING_DEPTH` is refused: NOT_EQUAL as a prediction, UNPARSEABLE_REFERENCE
    as a reference. Nothing raises out of `check_batch`.

In the caller's process (no sympy, linear in the answer length, bounded work):
  1. normalised strings equal                                                   -> equal
  2. structure: numbers compared exactly / within the rules above, word answers as normalised
     text, unordered lists matched by exact keys first; at most CHEAP_COMPARISON_BUDGET leaf
     comparisons per pair                                                       -> decided
In a worker process of `worker_pool.DeadlineWorkerPool` (`worker_tasks.py`), when a leaf needs it
or the budget ran out:
  3. the same structure walk with sympy leaves (`symbolic.symbolic_scalar_equal`) under a hard
     deadline; a timeout or an error counts as not equal.

`AnswerChecker.check_batch` returns one verdict per pair: EQUAL, NOT_EQUAL, or
UNPARSEABLE_REFERENCE (the reference itself is empty, refused, or not readable as math or words:
a reward is then None, not 0). Verdicts are cached per (prediction, reference) so a GRPO group's
duplicate answers cost one check.

Cost: O(answer length) per pair in-process; pairs that need sympy cost a pipe round trip plus
the sympy work (at most the deadline), spread over the pool's processes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from megatron_recipes.rewards.normalization import (
    MAX_NESTING_DEPTH,
    base_number,
    is_text_answer,
    nesting_depth,
    normalize_answer,
    normalize_text,
    numbers_match,
    parse_number,
    percent_readings,
    reading_pairs,
)
from megatron_recipes.rewards.structure import AnswerNode, NeedsSymbolic, compare_structures, leaves, parse_structure
from megatron_recipes.rewards.worker_pool import DeadlineWorkerPool, default_pool

logger = logging.getLogger(__name__)

EQUAL = "equal"
NOT_EQUAL = "not_equal"
UNPARSEABLE_REFERENCE = "unparseable_reference"

# A normalised answer longer than this is refused (a list of a few thousand numbers still fits).
MAX_ANSWER_CHARACTERS = 50_000
# Raw text longer than this is not read at all (a completion is cut to its answer first).
MAX_INPUT_CHARACTERS = 1_000_000
# Leaf comparisons the caller spends on one pair before handing it to a worker (and its deadline).
CHEAP_COMPARISON_BUDGET = 5_000
# Pairs and structures longer than this are not cached (the caches hold strings).
_MAX_CACHED_CHARACTERS = 2_000
_INFINITIES = {r"\infty": r"\infty", r"+\infty": r"\infty", r"-\infty": r"-\infty"}


@dataclass(frozen=True)
class CheckOptions:
    """How lenient a numeric comparison is; its defaults are the `answer_check` section's
    (rewards/config.py)."""

    # Float noise only (0.30000000000000004 == 3/10), and only for a decimal printed to float
    # precision (normalization.FLOAT_NOISE_MIN_DIGITS): relative, so 1/2^99 != 1/2^98.
    relative_tolerance: float = 1e-9
    # A decimal may stand for a fraction without a finite expansion or an irrational constant if it
    # shows the other side's digits rounded or truncated (0.333 for 1/3, 1.414 for sqrt 2)...
    approximate_decimals: bool = True
    # ... and has at least this many significant digits (0.3 is not 1/3).
    min_significant_digits: int = 3

    def as_list(self) -> list:
        return [self.relative_tolerance, self.approximate_decimals, self.min_significant_digits]


def answer_too_complex(normalized: str) -> bool:
    """Answers the checker refuses to read (see the module docstring's limits)."""
    return len(normalized) > MAX_ANSWER_CHARACTERS or nesting_depth(normalized) > MAX_NESTING_DEPTH


def _reading_equal(predicted: str, reference: str, options: CheckOptions) -> bool:
    """One reading of two leaves, decided without sympy, or NeedsSymbolic."""
    if predicted == reference:
        return True
    predicted_base, reference_base = base_number(predicted), base_number(reference)
    if predicted_base is not None or reference_base is not None:
        return predicted_base == reference_base
    predicted_number, reference_number = parse_number(predicted), parse_number(reference)
    if predicted_number is not None and reference_number is not None:
        return numbers_match(
            predicted_number,
            reference_number,
            predicted,
            reference,
            options.relative_tolerance,
            options.approximate_decimals,
            options.min_significant_digits,
        )
    if predicted in _INFINITIES or reference in _INFINITIES:
        if predicted in _INFINITIES and reference in _INFINITIES:
            return _INFINITIES[predicted] == _INFINITIES[reference]
        if predicted_number is not None or reference_number is not None:
            return False
    if is_text_answer(predicted) or is_text_answer(reference):
        return normalize_text(predicted) == normalize_text(reference)
    raise NeedsSymbolic


class _ComparisonBudget:
    def __init__(self, limit: int):
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise NeedsSymbolic  # too much work for the caller: a worker decides under its deadline


def scalar_rule(
    options: CheckOptions,
    symbolic_equal: Callable[[str, str], bool] | None = None,
    budget: int | None = None,
) -> Callable[[str, str], bool]:
    """The leaf comparison: every percent reading of the pair (`normalization.reading_pairs`), each
    decided cheaply, else by symbolic_equal (in a worker), else NeedsSymbolic."""
    counter = _ComparisonBudget(budget) if budget is not None else None

    def equal(predicted: str, reference: str) -> bool:
        if counter is not None:
            counter.spend()
        undecided = False
        for predicted_reading, reference_reading in reading_pairs(predicted, reference):
            try:
                if _reading_equal(predicted_reading, reference_reading, options):
                    return True
            except NeedsSymbolic:
                if symbolic_equal is None:
                    undecided = True
                elif symbolic_equal(predicted_reading, reference_reading):
                    return True
        if undecided:
            raise NeedsSymbolic
        return False

    return equal


@functools.lru_cache(maxsize=4096)
def _cached_structure(normalized: str) -> AnswerNode:
    return parse_structure(normalized)


def structure_of(normalized: str) -> AnswerNode:
    return _cached_structure(normalized) if len(normalized) <= _MAX_CACHED_CHARACTERS else parse_structure(normalized)


def cheap_verdict(predicted: str, reference: str, options: CheckOptions) -> bool | None:
    """In-process decision on two normalised answers, or None when sympy (or more work than the
    caller's budget) is needed. A refused prediction is not equal."""
    if predicted == reference:
        return True
    if not predicted or answer_too_complex(predicted) or answer_too_complex(reference):
        return False
    try:
        return compare_structures(
            structure_of(predicted), structure_of(reference), scalar_rule(options, budget=CHEAP_COMPARISON_BUDGET)
        )
    except NeedsSymbolic:
        return None


def _cheaply_readable(leaf: str) -> bool:
    reading = percent_readings(leaf)[0]
    return (
        parse_number(reading) is not None
        or base_number(reading) is not None
        or reading in _INFINITIES
        or is_text_answer(reading)
    )


def cheap_reference_status(reference: str) -> bool | None:
    """True: readable without sympy (numbers, words, the empty set); False: empty or refused;
    None: ask a worker."""
    if not reference or answer_too_complex(reference):
        return False
    if reference.count("{") != reference.count("}"):
        return False
    structure = structure_of(reference)
    texts = list(leaves(structure))
    if not texts:
        return structure.kind == "unordered"  # the empty set
    if any(not text for text in texts):
        return False
    if all(_cheaply_readable(text) for text in texts):
        return True
    return None


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
        length = sum(map(len, key)) if isinstance(key, tuple) else len(key)
        if length > _MAX_CACHED_CHARACTERS:
            return
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)


def _safe_normalize(answer: str | None) -> str | None:
    """The normalised answer, "" for none, or None when the answer is refused (too long or too
    deeply nested)."""
    if answer is None:
        return ""
    if not isinstance(answer, str):
        answer = str(answer)  # a dataset may hand over 72 or 0.5 as numbers
    if len(answer) > MAX_INPUT_CHARACTERS:
        return None
    try:
        normalized = normalize_answer(answer)
    except Exception:  # a normaliser bug must cost one answer, never the batch
        logger.debug("could not normalise an answer", exc_info=True)
        return None
    return None if answer_too_complex(normalized) else normalized


class AnswerChecker:
    """Batched answer equivalence with sympy work in a deadline pool.

    Args:
        options: numeric leniency (CheckOptions).
        pool: a `DeadlineWorkerPool`; None uses the process-wide default pool.
        timeout_s: per-check deadline for the symbolic step (None: the pool's).
        cache_size: verdicts kept per (prediction, reference).
    """

    def __init__(
        self,
        options: CheckOptions | None = None,
        pool: DeadlineWorkerPool | None = None,
        timeout_s: float | None = None,
        cache_size: int = 65536,
    ):
        self.options = options or CheckOptions()
        self._pool = pool
        self.timeout_s = timeout_s
        self._verdicts = _BoundedCache(cache_size)
        self._references = _BoundedCache(cache_size)

    @property
    def pool(self) -> DeadlineWorkerPool:
        if self._pool is None:
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
            try:
                status = cheap_reference_status(reference)
            except Exception:  # defensive: let the worker (which has a deadline) decide
                logger.debug("in-process reference check failed", exc_info=True)
                status = None
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
                if isinstance(result, bool):  # a timeout or failure is not cached: it may pass next time
                    self._references.put(reference, status)
        return statuses

    def check_batch(self, predictions: Sequence[str | None], references: Sequence[str | None]) -> list[str]:
        """EQUAL / NOT_EQUAL / UNPARSEABLE_REFERENCE for each (prediction, reference) pair.

        predictions: extracted answers or whole solutions (None when the completion had none:
            NOT_EQUAL).
        references: reference final answers or solutions (LaTeX or plain; None or "" is unparseable).
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        normalized_references = [_safe_normalize(r) for r in references]
        normalized_predictions = [_safe_normalize(p) for p in predictions]
        statuses = self._reference_statuses([r for r in normalized_references if r is not None])
        results: list[str | None] = [None] * len(predictions)
        symbolic_pairs: dict[tuple[str, str], list[int]] = {}
        for index, (predicted, reference) in enumerate(zip(normalized_predictions, normalized_references)):
            if reference is None or not statuses[reference]:
                results[index] = UNPARSEABLE_REFERENCE
                continue
            if not predicted:  # no answer, or a refused one
                results[index] = NOT_EQUAL
                continue
            key = (predicted, reference)
            cached = self._verdicts.get(key)
            if cached is None:
                try:
                    verdict = cheap_verdict(predicted, reference, self.options)
                except Exception:  # defensive: the worker decides, and its failures are NOT_EQUAL
                    logger.debug("in-process comparison failed", exc_info=True)
                    verdict = None
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
