"""The R1 rewards: language consistency (real py3langid, the corpus pipeline's identifier), the
accuracy read from the answer part, code execution in the real sandbox, the general-prompt
stand-in, and how rollouts pass questions and options to them."""

from __future__ import annotations

import json

import pytest

from megatron_recipes.rewards import get_reward
from megatron_recipes.rewards.code_execution import parse_test_cases
from megatron_recipes.rewards.language import (
    chain_of_thought,
    consistency_score,
    language_shares,
    language_units,
    question_language,
)
from megatron_recipes.rl.reasoning_metrics import revises_itself
from megatron_recipes.rl.rollout import RolloutSample, compute_rewards

MIXED = "<think> Let me add 3 and 4. 加起来是 7。 So the answer is 7. </think> <answer> 7 </answer>"


def test_units_are_words_and_cjk_characters_by_script():
    spans = language_units(chain_of_thought(MIXED))
    assert [(span.script, span.units) for span in spans] == [("word", 4), ("han", 4), ("word", 4)]
    # Digits and symbols between words stay inside a span but are not units.
    assert spans[0].text == "Let me add 3 and"
    assert language_units("3 + 4 = 7") == []


def test_consistency_of_mixed_english_and_chinese_chains():
    chain = chain_of_thought(MIXED)
    assert language_shares(chain) == {"en": 8, "zh": 4}
    assert consistency_score(chain, "en") == pytest.approx(8 / 12)
    assert consistency_score(chain, "zh") == pytest.approx(4 / 12)
    assert consistency_score("首先 3 加 4 等于 7，然后检查一下。", "zh") == 1.0
    assert consistency_score("First add 3 and 4, then check the result.", "en") == 1.0
    assert consistency_score("First add 3 and 4, then check the result.", "zh") == 0.0
    # A chain with no word at all earns nothing (saying nothing must not pay).
    assert consistency_score("3 + 4 = 7", "en") == 0.0
    # Only the chain of thought counts, not the answer part.
    assert chain_of_thought("<think> 三加四等于七 </think> <answer> seven </answer>") == " 三加四等于七 "
    assert chain_of_thought("no tags here") == "no tags here"
    assert chain_of_thought("<think> unclosed reasoning") == " unclosed reasoning"


def test_question_language_and_the_registered_reward():
    assert question_language("Calculate 3 + 4.") == "en" and question_language("计算 3 + 4。") == "zh"
    assert question_language("3 + 4") is None
    reward = get_reward("language_consistency")
    completions = [MIXED, MIXED, "<think> 3 + 4 = 7 </think> 7"]
    scores = reward(completions, [None] * 3, questions=["Calculate 3 + 4.", "计算 3 + 4。", "Calculate 3 + 4."])
    assert scores == pytest.approx([8 / 12, 4 / 12, 0.0])
    assert reward([MIXED], [None], target_language="zh") == pytest.approx([4 / 12])
    with pytest.raises(ValueError, match="needs the questions"):
        reward([MIXED], [None])


def test_think_accuracy_reads_the_answer_part_only():
    reward = get_reward("think_accuracy")
    completions = [
        "<think> 3 + 4 = 7 </think> <answer> 7 </answer>",
        "<think> 3 + 4 = 7 </think> The answer is 7.",
        "<think> 3 + 4 = 7 </think> <answer> 8 </answer>",
        "3 + 4 = 7",  # no answer part: the reasoning was never closed
        "<think> the answer is 7 </think> <answer> eight </answer>",  # a 7 inside the reasoning does not count
        "<think> a word </think> <answer> 7 </answer>",
    ]
    references = ["7", "7", "7", "7", "7", "[general] apple"]
    assert reward(completions, references) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_general_preference_scores_general_prompts_only():
    reward = get_reward("general_preference")
    completions = [
        "<think> repeat it </think> <answer> apple </answer>",
        "<think> x </think> <answer> pear </answer>",
        "7",
    ]
    assert reward(completions, ["[general] apple", "[general] apple", "7"]) == [1.0, 0.0, 0.0]


def test_compute_rewards_passes_questions_and_options_and_sums_weights():
    samples = [
        RolloutSample(
            0,
            "q",
            "7",
            [1],
            text="<think> Add 3 and 4 to get seven </think> <answer> 7 </answer>",
            question="Calculate 3 + 4.",
        ),
        RolloutSample(
            0, "q", "7", [1], text="<think> 三加四等于七 </think> <answer> 7 </answer>", question="Calculate 3 + 4."
        ),
    ]
    compute_rewards(samples, ["think_accuracy", "language_consistency"], [1.0, 0.5])
    assert [s.rewards["language_consistency"] for s in samples] == [1.0, 0.0]
    assert [s.reward for s in samples] == [1.5, 1.0]
    options = {"language_consistency": {"target_language": "zh"}}
    compute_rewards(samples, ["think_accuracy", "language_consistency"], [1.0, 0.5], reward_options=options)
    assert [s.reward for s in samples] == [1.0, 1.5]


ADD_TESTS = json.dumps(
    {
        "tests": [
            {"input": "1 2\n", "output": "3\n"},
            {"input": "10 -4\n", "output": "6"},
            {"input": "0 0", "output": "0"},
        ],
        "time_limit_s": 1.5,
    }
)


def program(body: str) -> str:
    return f"<think> read two numbers </think>\n```python\n{body}\n```"


def test_code_execution_rewards_in_the_sandbox():
    completions = [
        program("a, b = map(int, input().split())\nprint(a + b)"),  # passes all three
        program("a, b = map(int, input().split())\nprint(a + b if a else 1)"),  # fails the third
        program("while True:\n    pass"),  # the time limit
        program("raise SystemExit(3)"),  # a non-zero exit
        "<think>\n```python\nprint(3)\n```\n</think> no program in the answer part",
        program("print(1)"),
    ]
    references = [ADD_TESTS] * 5 + ["not a test suite"]
    assert get_reward("code_pass_rate")(completions, references) == pytest.approx([1.0, 2 / 3, 0.0, 0.0, 0.0, None])
    assert get_reward("code_all_pass")(completions[:2], references[:2]) == [1.0, 0.0]


def test_test_suites_parse_or_are_refused():
    suite = parse_test_cases(ADD_TESTS)
    assert len(suite.tests) == 3 and suite.time_limit_s == 1.5
    assert parse_test_cases(json.dumps([{"input": "", "output": "x"}])).time_limit_s == 2.0
    for bad in (None, "", "[]", '{"tests": [{"input": "1"}]}', '{"tests": [{"output": "1"}], "time_limit_s": -1}'):
        assert parse_test_cases(bad) is None


def test_reflection_phrases_match_at_word_boundaries():
    assert revises_itself("7. Wait, let me recompute: 8.")
    assert revises_itself("所以是 7。等等，重新算一下。")
    assert not revises_itself("We awaited the result: 7.")
    assert not revises_itself("3 + 4 = 7", ["double-check"])
    assert revises_itself("Let me double-check this.", ["double-check"])
