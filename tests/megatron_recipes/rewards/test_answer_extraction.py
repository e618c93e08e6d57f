"""Answer extraction and the R1-Zero format check (pure functions)."""

import pytest

from megatron_recipes.rewards import STYLE_STRATEGIES, extract_answer, find_boxed, follows_think_format


def test_boxed_with_nested_braces_takes_the_last_box():
    text = r"First \boxed{\frac{1}{2}} then corrected: $\boxed{\frac{\sqrt{3}}{\left(2+\{x\}\right)}}$."
    assert find_boxed(text) == [r"\frac{1}{2}", r"\frac{\sqrt{3}}{\left(2+\{x\}\right)}"]
    assert extract_answer(text) == r"\frac{\sqrt{3}}{\left(2+\{x\}\right)}"
    assert extract_answer(text, boxed="first") == r"\frac{1}{2}"


def test_fbox_and_unbraced_box_and_truncated_box():
    assert extract_answer(r"so \fbox{42} it is") == "42"
    assert extract_answer(r"hence \boxed 7 .") == "7"
    # A generation cut off inside the box has no answer (not a partial one).
    assert extract_answer(r"thus \boxed{\frac{1}{") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Adding up, the answer is 17.", "17"),
        ("So the final answer is $\\frac{3}{4}$. I hope", "\\frac{3}{4}"),
        ("Final Answer: The final answer is $x^2+1$. I hope it is correct.", "x^2+1"),
        ("The answer is: 3.5\nmore text", "3.5"),
        ("Answer: \\boxed{12}", "12"),
    ],
)
def test_answer_is_phrases(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_answer_and_last_number_fallback():
    solution = "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 72"
    assert extract_answer(solution, STYLE_STRATEGIES["gsm8k"]) == "72"
    assert extract_answer("She pays 3 * 4 = 12 dollars, so 1,250 in total", STYLE_STRATEGIES["gsm8k"]) == "1250"
    # MATH style has no last-number fallback unless asked for.
    assert extract_answer("we get 12 and then 15") is None
    assert extract_answer("we get 12 and then 15", last_number_fallback=True) == "15"


def test_multiple_choice_letters():
    assert extract_answer("Comparing the options, the answer is (C).", ("choice",)) == "C"
    assert extract_answer("Option (A) fails, (B) fails, so \\boxed{D}", ("choice",)) == "D"
    assert extract_answer("nothing here", ("choice",)) is None


def test_only_text_after_think_counts():
    text = "<think>maybe \\boxed{5}? no, recheck</think> The answer is \\boxed{6}."
    assert extract_answer(text) == "6"
    assert extract_answer("<think>\\boxed{5}</think>") is None
    assert extract_answer("<think>r</think><answer>\\boxed{9}</answer>") == "9"


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="unknown extraction strategy"):
        extract_answer("x", ("boxedd",))


@pytest.mark.parametrize(
    "text, plain, tagged",
    [
        ("<think>2+2 is 4</think> The answer is 4.", True, False),
        ("<think>2+2 is 4</think>\n<answer>4</answer>", True, True),
        ("The answer is 4.", False, False),
        ("<think></think> 4", False, False),
        ("<think>a</think>", False, False),
        ("<think>a</think> 4 <think>b</think> 5", False, False),
        ("<think>a</think><answer></answer>", True, False),
        ("<think>a</think><answer>4</answer> extra", True, False),
    ],
)
def test_think_format(text, plain, tagged):
    assert follows_think_format(text) is plain
    assert follows_think_format(text, require_answer_tags=True) is tagged
