"""Answer equivalence with real sympy in real worker processes, the deadline, and threads."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from megatron_recipes.rewards import EQUAL, NOT_EQUAL, UNPARSEABLE_REFERENCE, AnswerChecker, DeadlineWorkerPool
from megatron_recipes.rewards.equivalence import CheckOptions, cheap_verdict
from megatron_recipes.rewards.normalization import normalize_answer
from megatron_recipes.rewards.worker_pool import TIMEOUT


@pytest.fixture(scope="module")
def pool():
    with DeadlineWorkerPool(num_workers=2, task_timeout_s=3.0) as workers:
        yield workers


@pytest.fixture()
def checker(pool):
    return AnswerChecker(pool=pool)


EQUAL_PAIRS = [
    (r"\frac{1}{2}", "0.5"),
    ("1/2", r"\dfrac12"),
    (r"\dfrac12", r"\frac{1}{2}"),
    ("0.50", "1/2"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"5\text{ cm}", "5"),
    ("1,000", "1000"),
    (r"1{,}000", "1000"),
    (r"90^\circ", "90"),
    (r"50\%", "50"),
    ("3.0", "3"),
    (r"\$18", "18"),
    (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    ("x=3", "3"),
    (r"\{1,2\}", r"\{2,1\}"),
    ("2, -2", r"\pm 2"),
    (r"x^2+2x+1", r"(x+1)^2"),
    ("x=6, y=5", "(6,5)"),
    (r"y=2x+3", r"y = 3+2x"),
    (r"e^{i\pi}", "-1"),
    (r"\ln 8", r"3\ln 2"),
    ("2^(n-1)", r"2^{n-1}"),
    ("C(n, 4)", r"\frac{n(n-1)(n-2)(n-3)}{24}"),
    ("(2n)!/(2^n*n!)", r"\frac{(2n)!}{2^n n!}"),
    (r"\begin{pmatrix}1\\ \frac{1}{2}\end{pmatrix}", r"\begin{pmatrix}1\\0.5\end{pmatrix}"),
    ("0.333", r"\frac13"),
    ("1.414", r"\sqrt2"),
    ("3.1416", r"\pi"),
    (r"2\frac{1}{4}", "9/4"),
    (r"[-1, 2) \cup (3, \infty)", r"(3,\infty)\cup[-1,2)"),
    (r"x \in [0, 1)", "[0,1)"),
    (r"10^{10^{10}}", r"10^{10^{10}}"),
    (r"\text{No integer solutions}", "no integer solutions"),
    ("1.5\\times10^{3}", "1500"),
    (r"\sin^2 x + \cos^2 x", "1"),
    (r"|{-3}|", "3"),
    (r"\binom{5}{2}", "10"),
    ("0.30000000000000004", r"\frac{3}{10}"),
    (r"\sqrt[3]{8}", "2"),
    (r"x \le 3", r"3 \geq x"),
]

NOT_EQUAL_PAIRS = [
    # Known false positives of a popular peer.
    (r"\frac{1}{2004!}", r"\frac{1}{2006!}"),
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}"),
    (r"\pm 2021", "2021"),
    (r"1-\frac{1}{e}", r"1+\frac{1}{e}"),
    ("0.3", r"\frac{1}{3}"),
    ("0.33", r"\frac13"),
    ("1.42", r"\sqrt{2}"),
    ("3.15", r"\frac{22}{7}"),
    ("12.3", "12.25"),
    ("(1,2]", "(1,2)"),
    ("(1,2)", "(2,1)"),
    ("[0,1]", "(0,1)"),
    ("1, 2", "1, 2, 3"),
    ("x^2+2x+2", "(x+1)^2"),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}"),
    (r"10^{100}+1", r"10^{100}"),
    (r"10^{10^{10}}", r"10^{10^{10}}+1"),
    ("2", r"\sqrt{2}"),
    ("50", "0.5"),
    ("Yes", "No"),
    ("x=3", "y=3"),
    ("", "3"),
    (r"\frac{1}{0}", "1"),
    ("-3", "3"),
]


def test_equal_pairs(checker):
    verdicts = checker.check_batch([p for p, _ in EQUAL_PAIRS], [r for _, r in EQUAL_PAIRS])
    wrong = [pair for pair, verdict in zip(EQUAL_PAIRS, verdicts) if verdict != EQUAL]
    assert wrong == []


def test_not_equal_pairs_in_both_directions(checker):
    predictions = [p for p, _ in NOT_EQUAL_PAIRS] + [r for _, r in NOT_EQUAL_PAIRS[:-5]]
    references = [r for _, r in NOT_EQUAL_PAIRS] + [p for p, _ in NOT_EQUAL_PAIRS[:-5]]
    verdicts = checker.check_batch(predictions, references)
    wrong = [pair for pair, verdict in zip(zip(predictions, references), verdicts) if verdict == EQUAL]
    assert wrong == []


def test_unparseable_references_are_reported_not_scored(checker):
    verdicts = checker.check_batch(["3", "3", "3", "3"], [None, "", r"\frac{1}{", r"\weirdcommand{2}"])
    assert verdicts == [UNPARSEABLE_REFERENCE] * 4
    # A missing prediction against a good reference is simply wrong.
    assert checker.check_batch([None], ["3"]) == [NOT_EQUAL]


def test_cheap_path_decides_numbers_without_workers():
    options = CheckOptions()
    assert cheap_verdict(normalize_answer(r"\dfrac{3}{4}"), normalize_answer("0.75"), options) is True
    assert cheap_verdict("(1,2)", "(1,3)", options) is False
    assert cheap_verdict(r"\sqrt{2}", "1.414", options) is None  # needs sympy


def test_pathological_inputs_finish_quickly(checker):
    cases = [
        (r"10^{10^{10}}", r"10^{10^{10^{10}}}"),
        (r"(10^{10^{10}})!", "5"),
        (r"100000!", r"99999!"),
        (r"2^{2^{2^{2^{2^{2}}}}}", "3"),
        (r"\sqrt{" * 40 + "2" + "}" * 40, "1"),
        ("9" * 5000, "9" * 4999 + "8"),
        (r"x^{123456789}", r"x^{123456788}"),
        ("(" * 300 + "1" + ")" * 300, "2"),
    ]
    start = time.monotonic()
    verdicts = checker.check_batch([p for p, _ in cases], [r for _, r in cases])
    elapsed = time.monotonic() - start
    assert all(v in (NOT_EQUAL, UNPARSEABLE_REFERENCE) for v in verdicts)
    # The bound is the pool's deadline per task (3 s) over 2 workers, not sympy's patience.
    assert elapsed < 3.0 * len(cases) / 2 + 10


def test_a_stuck_worker_is_killed_and_replaced(pool):
    restarts = pool.stats.restarts
    start = time.monotonic()
    assert pool.run_one({"op": "sleep", "seconds": 60}, timeout_s=1.0) == TIMEOUT
    assert time.monotonic() - start < 10
    assert pool.stats.restarts == restarts + 1
    # The pool still answers (the replacement starts in the background).
    assert (
        pool.run_one({"op": "compare", "predicted": "2", "reference": r"\sqrt{4}", "options": CheckOptions().as_list()})
        is True
    )


def test_checks_from_many_threads(checker):
    """The deadline does not rely on signals, so checks from worker threads are scored."""
    pairs = [(r"\frac{%d}{2}" % k, str(k / 2)) for k in range(1, 40)] + [
        (r"\sqrt{%d}" % (k * k), str(k)) for k in range(2, 12)
    ]
    with ThreadPoolExecutor(max_workers=8) as executor:
        verdicts = list(executor.map(lambda pair: checker.equal(*pair), pairs))
    assert all(verdicts)
    assert threading.active_count() < 50


def test_options_control_decimal_leniency(pool):
    strict = AnswerChecker(CheckOptions(approximate_decimals=False), pool=pool)
    assert strict.check_batch(["0.333", "1.414", "0.5"], [r"\frac13", r"\sqrt2", r"\frac12"]) == [
        NOT_EQUAL,
        NOT_EQUAL,
        EQUAL,
    ]
    many_digits = AnswerChecker(CheckOptions(min_significant_digits=5), pool=pool)
    assert many_digits.check_batch(["0.333", "0.33333"], [r"\frac13", r"\frac13"]) == [NOT_EQUAL, EQUAL]
