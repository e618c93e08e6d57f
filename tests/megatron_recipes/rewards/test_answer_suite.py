"""The labelled answer-pair suite (tests/assets/answer_pairs.jsonl) through the real checker, and
metamorphic variants of every pair: a rewriting that does not change the mathematics must not
change the verdict.

Each suite line is {"prediction", "reference", "equal", "category"}; the pairs were written for
this project in the answer styles of MATH and GSM8K (see `equivalence.py` for the rules they pin).
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from megatron_recipes.rewards import EQUAL, AnswerChecker, DeadlineWorkerPool

SUITE_PATH = Path(__file__).resolve().parents[2] / "assets" / "answer_pairs.jsonl"
REQUIRED_CATEGORIES = {
    "fraction",
    "radical",
    "pi",
    "interval",
    "set",
    "tuple",
    "matrix",
    "percent",
    "unit",
    "equation",
    "inequality",
    "scientific",
    "mixed_number",
    "boxed_solution",
    "gsm8k",
    "thousands",
}


def load_suite() -> list[dict]:
    return [json.loads(line) for line in SUITE_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


SUITE = load_suite()


@pytest.fixture(scope="module")
def checker():
    with DeadlineWorkerPool(num_workers=2, task_timeout_s=3.0) as pool:
        yield AnswerChecker(pool=pool)


@pytest.fixture(scope="module")
def suite_verdicts(checker):
    predictions = [pair["prediction"] for pair in SUITE]
    references = [pair["reference"] for pair in SUITE]
    forward = checker.check_batch(predictions, references)
    swapped = checker.check_batch(references, predictions)
    return forward, swapped


def test_suite_is_well_formed():
    assert len(SUITE) >= 300
    assert all(set(pair) == {"prediction", "reference", "equal", "category"} for pair in SUITE)
    assert all(isinstance(pair["equal"], bool) for pair in SUITE)
    counts = Counter(pair["category"] for pair in SUITE)
    assert REQUIRED_CATEGORIES <= set(counts)
    # Both labels in every category, so a category cannot pass by always answering one way.
    for category in counts:
        labels = {pair["equal"] for pair in SUITE if pair["category"] == category}
        assert labels == {True, False}, category
    assert len({(pair["prediction"], pair["reference"]) for pair in SUITE}) == len(SUITE)


def test_suite_accuracy_and_no_false_equal(suite_verdicts):
    forward, _ = suite_verdicts
    wrong = [(pair, verdict) for pair, verdict in zip(SUITE, forward) if (verdict == EQUAL) != pair["equal"]]
    false_equal = [(pair["prediction"], pair["reference"]) for pair, verdict in wrong if verdict == EQUAL]
    assert false_equal == []
    accuracy = 1 - len(wrong) / len(SUITE)
    assert accuracy >= 0.99, [(pair["prediction"], pair["reference"], verdict) for pair, verdict in wrong]


def test_every_pair_gives_the_same_verdict_when_swapped(suite_verdicts):
    forward, swapped = suite_verdicts
    asymmetric = [
        (pair["prediction"], pair["reference"], a, b)
        for pair, a, b in zip(SUITE, forward, swapped)
        if (a == EQUAL) != (b == EQUAL)
    ]
    assert asymmetric == []


# ---------------------------------------------------------------------------------------------
# Metamorphic variants: each returns the rewritten answer, or None when it does not apply.
# ---------------------------------------------------------------------------------------------


def _with_whitespace(answer: str) -> str | None:
    # Spaces and newlines around the answer, a space before every command and around "=" / "+".
    spaced = re.sub(r"(?<!\\)\\(?=[a-zA-Z])", r" \\", answer).replace("=", " = ").replace("+", " + ")
    return f"  \n{spaced}\t "


def _with_left_right(answer: str) -> str | None:
    if "\\" in answer.replace(r"\frac", "").replace(r"\sqrt", "").replace(r"\pi", "").replace(r"\infty", ""):
        return None  # keep to answers whose brackets are all plain math brackets
    out = re.sub(r"([(\[])", r"\\left\1", answer)
    return re.sub(r"([)\]])", r"\\right\1", out)


def _with_dfrac(answer: str) -> str | None:
    return answer.replace(r"\frac", r"\dfrac") if r"\frac" in answer else None


def _with_thousands_separators(answer: str) -> str | None:
    if not re.fullmatch(r"-?\d{4,}", answer):
        return None
    return f"{int(answer):,}"


def _with_math_delimiters(answer: str) -> str | None:
    return None if "$" in answer or "\n" in answer else f"${answer}$"


def _with_boxed(answer: str) -> str | None:
    return None if "boxed" in answer or "####" in answer else f"The final answer is $\\boxed{{{answer}}}$."


VARIANTS = {
    "whitespace": _with_whitespace,
    "left_right": _with_left_right,
    "dfrac": _with_dfrac,
    "thousands": _with_thousands_separators,
    "delimiters": _with_math_delimiters,
    "boxed": _with_boxed,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_metamorphic_variants_keep_the_verdict(checker, suite_verdicts, variant):
    rewrite = VARIANTS[variant]
    forward, _ = suite_verdicts
    cases = []
    for pair, verdict in zip(SUITE, forward):
        if pair["category"] == "boxed_solution" and variant in ("whitespace", "left_right"):
            continue  # prose: spacing and brackets there are not math
        for side in ("prediction", "reference"):
            rewritten = rewrite(pair[side])
            if rewritten is not None and rewritten != pair[side]:
                changed = dict(pair, **{side: rewritten})
                cases.append((changed["prediction"], changed["reference"], verdict))
    assert len(cases) >= 20, f"the {variant} variant applies to too few pairs"
    verdicts = checker.check_batch([p for p, _, _ in cases], [r for _, r, _ in cases])
    changed = [
        (p, r, before, after) for (p, r, before), after in zip(cases, verdicts) if (before == EQUAL) != (after == EQUAL)
    ]
    assert changed == []
