"""Per-span credit for R1's language-consistency reward: chain_spans' offsets land in the
completion itself, the language_spans step reward pays each span in the question's language on
its opening character, outcome_steps adds each step's centred reward at that step's token only
(agreeing with its readable reference), a rollout batch built with them gives a sentence-opening
token the credit of its own sentence's language and leaves every other token at the outcome's,
and an unshuffled question file keeps its pairs of languages in every batch."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_recipes.data.config import ChatTemplateConfig, PromptSourceConfig
from megatron_recipes.data.rl_prompts import PromptStream
from megatron_recipes.rewards.language import chain_spans, consistency_score
from megatron_recipes.rl.config import RlConfig
from megatron_recipes.rl.objectives import (
    AdvantageInputs,
    get_advantage_estimator,
    reference_outcome_steps_advantages,
)
from megatron_recipes.rl.rollout import RolloutSample, compute_rewards, rollout_batch
from megatron_recipes.rl.step_rewards import Step, get_step_reward
from stack_common.errors import ConfigError

EPSILON = RlConfig().advantage_epsilon
MIXED = "<think> Add 3 and 4. 3 + 4 = 7. 所以和是 7。 So the sum is 7. </think> <answer> 7 </answer>"


def test_chain_spans_start_and_end_where_each_span_does_in_the_completion():
    spans = chain_spans(MIXED)
    assert [(units, language) for _, _, units, language in spans] == [(2, "en"), (4, "zh"), (4, "en")]
    assert [MIXED[start:end] for start, end, _, _ in spans] == ["Add 3 and", "所以和是", "So the sum is"]
    # The same labels and units consistency_score counts.
    assert consistency_score(MIXED.split("</think>")[0].replace("<think>", ""), "en") == pytest.approx(6 / 10)
    assert chain_spans("<think> 3 + 4 = 7 </think> 7") == []


def test_language_spans_pays_each_span_on_its_opening_character():
    steps = get_step_reward("language_spans")
    starts = [start for start, _, _, _ in chain_spans(MIXED)]
    assert [MIXED[s - 1] for s in [start + 1 for start in starts]] == ["A", "所", "S"]
    english = steps(MIXED, "7", question="Calculate 3 + 4.")
    assert english == [Step(starts[0] + 1, 1.0), Step(starts[1] + 1, 0.0), Step(starts[2] + 1, 1.0)]
    assert [step.reward for step in steps(MIXED, "7", question="计算 3 + 4。", weight=2.0)] == [0.0, 2.0, 0.0]


def test_outcome_steps_matches_its_reference_and_credits_only_the_step_tokens():
    group = [0, 0, 1, 1]
    rewards = [1.0, 0.0, 1.0, 1.0]  # group 1: equal outcomes, its steps still differ
    mask = torch.zeros(4, 6)
    mask[0, 1:6] = 1
    mask[1, 0:4] = 1
    mask[2, 0:6] = 1
    mask[3, 2:5] = 1
    steps = [[(2, 1.0), (4, 0.0)], [(1, 1.0)], [(3, 1.0)], [(4, 0.0)]]
    step_rewards, step_mask = torch.zeros(4, 6), torch.zeros(4, 6)
    for row, row_steps in enumerate(steps):
        for position, reward in row_steps:
            step_rewards[row, position], step_mask[row, position] = reward, 1.0
    inputs = AdvantageInputs(torch.tensor(rewards), torch.tensor(group), mask, EPSILON, step_rewards, step_mask)
    result = get_advantage_estimator("outcome_steps")(inputs)
    expected = reference_outcome_steps_advantages(rewards, steps, group, [[float(v) for v in r] for r in mask], EPSILON)
    assert torch.allclose(result.tokens, torch.tensor(expected), atol=1e-6)
    outcome = get_advantage_estimator("outcome")(inputs).tokens
    # Group 0's step rewards 1, 0, 1 (mean 2/3): output 0's token 2 gets +1/3, token 4 -2/3, no other.
    extra = (result.tokens - outcome)[0].tolist()
    assert extra == pytest.approx([0.0, 0.0, 1 / 3, 0.0, -2 / 3, 0.0], abs=1e-6)
    # Equal outcomes but different steps: not a zero-variance group.
    assert result.zero_variance.tolist() == [False, False, False, False]
    assert result.tokens[2, 3].item() == pytest.approx(0.5) and result.tokens[2, 0].item() == 0.0
    with pytest.raises(ValueError, match="needs step_rewards"):
        get_advantage_estimator("outcome_steps")(
            AdvantageInputs(torch.tensor(rewards), torch.tensor(group), mask, EPSILON)
        )


def test_a_rollout_batch_credits_the_opening_tokens_of_each_sentence_by_its_language():
    # One character per token (decode = join): every character is a token.
    english = "<think> Add 3 and 4. So the sum is 7. </think> <answer> 7 </answer>"
    mixed = "<think> 加起来。 So the sum is 7. </think> <answer> 7 </answer>"
    samples = [
        RolloutSample(0, "q", "7", [0], response_ids=[ord(c) for c in text], trained=[True] * len(text), text=text)
        for text in (english, mixed)
    ]
    for sample in samples:
        sample.question = "Calculate 3 + 4."
    options = {"language_spans": {"weight": 1.0}}
    compute_rewards(
        samples,
        ["think_accuracy", "language_consistency"],
        [1.0, 0.0],
        step_reward="language_spans",
        reward_options=options,
    )
    assert [s.rewards["language_consistency"] for s in samples] == pytest.approx([1.0, 4 / 7])
    batch = rollout_batch(samples, 0, "outcome_steps", EPSILON, decode=lambda ids: "".join(chr(i) for i in ids))
    # Equal outcomes: only the span credit moves the advantages, at the opening tokens. Steps: the
    # English chain is one span (1); the mixed one a Chinese span (0) then an English one (1); mean 2/3.
    first = len(samples[0].prompt_ids) - 1
    assert batch.advantages[1, first + mixed.index("加")].item() == pytest.approx(-2 / 3)
    assert batch.advantages[1, first + mixed.index("So")].item() == pytest.approx(1 / 3)
    assert batch.advantages[0, first + english.index("Add")].item() == pytest.approx(1 / 3)
    moved = (batch.advantages[:, first:] != 0).sum(1).tolist()
    assert moved == [1, 2]  # the arithmetic, the answer and the rest of each sentence are left alone


def test_config_checks_the_step_reward_and_its_options():
    RlConfig(
        rewards=["think_accuracy"],
        advantage_estimator="outcome_steps",
        step_reward="language_spans",
        reward_options={"language_spans": {"weight": 2.0}},
    ).validate()
    with pytest.raises(ConfigError, match="rl.step_reward"):
        RlConfig(rewards=["think_accuracy"], advantage_estimator="outcome_steps").validate()


def test_an_unshuffled_question_file_keeps_its_order_every_pass(tmp_path):
    path = tmp_path / "paired.jsonl"
    questions = [("Calculate 3 + 4.", "7"), ("计算 3 + 4。", "7"), ("Calculate 2 + 5.", "7"), ("计算 2 + 5。", "7")]
    path.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n" for i, (q, a) in enumerate(questions)),
        encoding="utf-8",
    )
    stream = PromptStream(
        PromptSourceConfig(source="jsonl", path=str(path), split="all", shuffle=False), ChatTemplateConfig()
    )
    # Every batch of two is a question and its translation, in the first pass and the next ones.
    assert [r.id for r in stream.take(0, 10)] == ["q0", "q1", "q2", "q3"] * 2 + ["q0", "q1"]
    shuffled = PromptStream(PromptSourceConfig(source="jsonl", path=str(path), split="all"), ChatTemplateConfig())
    assert sorted(r.id for r in shuffled.take(0, 4)) == ["q0", "q1", "q2", "q3"]
