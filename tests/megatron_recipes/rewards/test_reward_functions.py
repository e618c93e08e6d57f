"""Reward functions by name: batched, pure, None for unparseable references."""

import pytest

from megatron_recipes.rewards import REWARD_FUNCTIONS, DeadlineWorkerPool, get_reward, reference_answer
from megatron_recipes.rewards.equivalence import AnswerChecker


@pytest.fixture(scope="module")
def checker():
    with DeadlineWorkerPool(num_workers=1, task_timeout_s=3.0) as pool:
        yield AnswerChecker(pool=pool)


def test_registry_names_and_error():
    assert {
        "math_accuracy",
        "gsm8k_accuracy",
        "multiple_choice_accuracy",
        "think_format",
        "think_answer_format",
    } <= set(REWARD_FUNCTIONS)
    with pytest.raises(KeyError, match="unknown reward 'nope'; registered: .*math_accuracy"):
        get_reward("nope")


def test_math_accuracy_batch(checker):
    completions = [
        r"We simplify and get $\boxed{\dfrac{1}{2}}$.",
        r"<think>try \boxed{3}</think> so \boxed{0.5}",
        r"The answer is 0.5 but no box here",  # "answer is" still counts in math style
        r"I am not sure, maybe 1/2 or 7.",  # no box, no phrase, no fallback: wrong
        r"\boxed{\frac{1}{2}}",
        r"\boxed{\frac{1}{2}}",
    ]
    references = ["1/2", r"\frac12", "0.5", "1/2", None, r"Thus $x=\boxed{\tfrac{1}{2}}$ as claimed."]
    rewards = get_reward("math_accuracy")(completions, references, checker=checker)
    assert rewards == [1.0, 1.0, 1.0, 0.0, None, 1.0]
    # Pure: the same inputs give the same outputs.
    assert get_reward("math_accuracy")(completions, references, checker=checker) == rewards


def test_gsm8k_accuracy_uses_hashes_then_last_number(checker):
    reward = get_reward("gsm8k_accuracy")
    completions = ["3 + 4 = 7\n#### 7", "so she has 1,250 dollars", "It is 12 then 13.", "#### 8"]
    references = ["Janet has 3 + 4 = 7.\n#### 7", "1250", "12", "7"]
    assert reward(completions, references, checker=checker) == [1.0, 1.0, 0.0, 0.0]
    assert reward(["so 12"], ["12"], last_number_fallback=False, checker=checker) == [0.0]


def test_multiple_choice_and_format_rewards():
    choice = get_reward("multiple_choice_accuracy")
    assert choice(["The answer is (B).", "I pick \\boxed{C}", "no idea"], ["B", "(B)", "C"]) == [1.0, 0.0, 0.0]
    assert choice(["(A)"], ["not a letter"]) == [None]
    think = get_reward("think_format")
    completions = ["<think>2+2</think> 4", "4", "<think>2+2</think><answer>4</answer>"]
    assert think(completions, [None] * 3) == [1.0, 0.0, 1.0]
    assert get_reward("think_answer_format")(completions, [None] * 3) == [0.0, 0.0, 1.0]


def test_length_mismatch_is_an_error(checker):
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        get_reward("math_accuracy")(["a", "b"], ["1"], checker=checker)


def test_reference_answer_from_solutions():
    assert reference_answer(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert reference_answer("48/2 = 24\n#### 72") == "72"
    assert reference_answer("  ") is None
