"""Metrics against readable references on random data, and the summary's pass@1 / cons@k / pass@k
from records."""

import random

import numpy as np
import pytest

from megatron_recipes.evaluation.harness import summarize
from megatron_recipes.evaluation.metrics import (
    consensus_at_k,
    consensus_reference,
    majority_index,
    pass_at_k,
    pass_at_k_reference,
    pass_at_k_vector,
)
from megatron_recipes.evaluation.problems import KIND_ANSWER, KIND_CHOICE
from megatron_recipes.generation.interface import SamplingParams


def random_problems(seed: int, problems: int, samples: int, answers: int = 3):
    """Per problem: sample answers (some None) and their correctness (answer "0" is right)."""
    rng = random.Random(seed)
    keys, flags = [], []
    for _ in range(problems):
        row = [rng.choice([None, *map(str, range(answers))]) for _ in range(samples)]
        keys.append(row)
        flags.append([key == "0" for key in row])
    return keys, flags


@pytest.mark.parametrize("seed", range(5))
def test_pass_at_k_matches_the_subset_enumeration(seed):
    keys, flags = random_problems(seed, 40, 8)
    for k in range(1, 9):
        vector = pass_at_k_vector([len(f) for f in flags], [sum(f) for f in flags], k)
        reference = [pass_at_k_reference(f, k) for f in flags]
        scalar = [pass_at_k(len(f), sum(f), k) for f in flags]
        assert vector == pytest.approx(reference, abs=1e-12) and scalar == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_cons_at_k_matches_the_readable_majority_vote(seed):
    keys, flags = random_problems(seed, 60, 16, answers=4)
    for k in (1, 2, 3, 5, 8, 16):
        vector = consensus_at_k(keys, flags, k)
        reference = [consensus_reference(row, f, k) for row, f in zip(keys, flags)]
        assert list(vector) == reference
    # A tie goes to the answer seen first; no answer at all scores 0.
    assert consensus_at_k([["1", "0", "0", "1"]], [[False, True, True, False]], 4)[0] == 0.0
    assert consensus_at_k([[None, None]], [[False, False]], 2)[0] == 0.0
    assert consensus_reference(["1", "0", "0", "1"], [False, True, True, False], 4) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_pass_at_1_over_k_samples_is_the_mean_per_sample_correctness(seed):
    keys, flags = random_problems(seed, 25, 6)
    records = [
        {
            "id": str(index),
            "gradable": True,
            "subject": "",
            "level": "",
            "language": "en",
            "samples": [{"text": "x" * 3, "answer": key, "correct": flag} for key, flag in zip(row, row_flags)],
        }
        for index, (row, row_flags) in enumerate(zip(keys, flags))
    ]
    report = summarize(records, [1, 3, 6], SamplingParams(n=6, temperature=0.6), KIND_CHOICE)
    per_sample = np.mean([flag for row in flags for flag in row])
    assert report.summary["pass@1"] == pytest.approx(per_sample) and report.summary["accuracy"] == pytest.approx(
        per_sample
    )
    assert report.summary["pass@3"] == pytest.approx(np.mean([pass_at_k_reference(f, 3) for f in flags]))
    assert report.summary["cons@6"] == pytest.approx(
        np.mean([consensus_reference(r, f, 6) for r, f in zip(keys, flags)])
    )
    assert report.summary["samples_without_answer"] == sum(key is None for row in keys for key in row)
    assert report.summary["mean_response_characters"] == 3.0 and report.summary["greedy"] is False


def test_cons_at_k_groups_spellings_of_the_same_answer():
    records = [
        {
            "id": "p",
            "gradable": True,
            "samples": [
                {"text": "", "answer": "\\frac12", "correct": True},
                {"text": "", "answer": "3", "correct": False},
                {"text": "", "answer": "0.5", "correct": True},
            ],
        }
    ]
    report = summarize(records, [3], SamplingParams(n=3), KIND_ANSWER)
    assert report.summary["cons@3"] == 1.0 and report.summary["pass@1"] == pytest.approx(2 / 3)
    assert majority_index(["\\frac12", "3", "0.5", None]) == 0 and majority_index([None, None]) is None
