"""The reward models' pure parts on real inputs: the step-chain task (ground-truth step labels,
held-out split), the record format (steps, scored positions, dead letters), replay batches with
an exact fraction, the loss and AUC against their readable references, GAE and the clipped value
loss against theirs, learned rewards in rollout.compute_rewards, and the configs' one-line errors."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
import torch

from megatron_recipes.data.step_chains import (
    Chain,
    check_disjoint,
    draw_chains,
    is_heldout,
    parse_question,
    solution_steps,
    true_step_labels,
    write_task,
)
from megatron_recipes.reward_models.config import RewardModelSettings
from megatron_recipes.reward_models.data import (
    RewardBatches,
    check_no_shared_questions,
    example_from_record,
    micro_batches,
    read_examples,
    split_by_question,
)
from megatron_recipes.reward_models.kinds import REWARD_MODEL_KINDS, get_reward_model_kind, kind_of_hf_class
from megatron_recipes.reward_models.objectives import (
    pooled_outcome_loss,
    reference_pooled_outcome_loss,
    reference_reward_loss,
    reference_roc_auc,
    reward_loss,
    roc_auc,
)
from megatron_recipes.rl.config import IterativeConfig, RlConfig
from megatron_recipes.rl.objectives import (
    AdvantageInputs,
    clipped_value_loss,
    get_advantage_estimator,
    reference_clipped_value_loss,
    reference_gae_advantages,
)
from megatron_recipes.rl.rollout import MODEL_REWARD, ModelScores, RolloutSample, compute_rewards
from megatron_recipes.rl.step_rewards import split_steps
from stack_common.errors import ConfigError

CHAIN = Chain(8, (("subtract", 6), ("add", 3), ("subtract", 2)))


class CharacterTokenizer:
    """One token per character (ids 1..), EOD 0: positions are easy to state by hand."""

    eod = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i)


def test_chain_solutions_and_ground_truth_step_labels():
    assert CHAIN.question == "Start at 8, subtract 6, add 3, subtract 2."
    assert parse_question(CHAIN.question + "\nPlease reason step by step.") == CHAIN
    correct = "\n".join(solution_steps(CHAIN))
    assert correct == "8 - 6 = 2\n2 + 3 = 5\n5 - 2 = 3\nThe answer is $\\boxed{3}$."
    assert true_step_labels(CHAIN.question, correct) == [1.0, 1.0, 1.0, 1.0]
    # A slip at the second operation: that step and every later one (answer included) are wrong.
    slipped = "\n".join(solution_steps(CHAIN, slips=[1]))
    assert slipped.splitlines()[1] == "2 + 3 = 6" and slipped.endswith("\\boxed{4}$.")
    assert true_step_labels(CHAIN.question, slipped) == [1.0, 0.0, 0.0, 0.0]
    # A true equation after a wrong one is still off the path; a wrong copy of the running value too.
    assert true_step_labels(CHAIN.question, " 8 - 6 = 3\n3 + 3 = 6\n6 - 2 = 4\nThe answer is $\\boxed{4}$.") == [
        0.0,
        0.0,
        0.0,
        0.0,
    ]
    assert true_step_labels(CHAIN.question, "8 - 6 = 2\n2 + 4 = 6\n") == [1.0, 0.0]
    assert true_step_labels("What is 2 + 2?", "4") is None


def test_heldout_split_is_disjoint_by_construction_and_checked(tmp_path):
    train = draw_chains(300, seed=1, heldout=False)
    held = draw_chains(60, seed=2, heldout=True)
    assert all(not is_heldout(c.question) for c in train) and all(is_heldout(c.question) for c in held)
    check_disjoint([c.question for c in held], [c.question for c in train])
    with pytest.raises(ConfigError, match="1 held-out question"):
        check_disjoint([held[0].question], [c.question for c in train] + [held[0].question])
    summary = write_task(tmp_path, sft=200, train=50, heldout=20, seed=3)
    assert summary["sft_examples"] == 200 and summary["heldout_questions"] == 20
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    # The default slip rates put a slip into roughly half of the SFT solutions.
    assert 0.25 < sum(1 for r in sft if r["slips"]) / len(sft) < 0.75
    questions = [json.loads(line) for line in (tmp_path / "heldout_questions.jsonl").read_text().splitlines()]
    assert questions[0]["answer"].split("#### ")[1] == str(parse_question(questions[0]["question"]).answer)


def test_steps_and_scored_positions_of_records(tmp_path):
    assert [s.end for s in split_steps("a\nbb\n\nccc\n")] == [1, 4, 9]
    prompt, response = "Q:", "12\n34"
    records = [
        {"prompt": prompt, "response": response, "correct": True, "step_labels": [1, 0], "question": "q1"},
        {"prompt": prompt, "response": response, "correct": 0.25, "step_labels": [1], "question": "q2"},
        {"prompt": prompt, "response": "", "correct": 1},
        {"prompt": prompt, "response": response, "correct": 2.0, "step_labels": [1, 0]},
        {"prompt": prompt, "response": "x" * 40, "correct": 1, "step_labels": [1]},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    tokenizer = CharacterTokenizer()
    dead: list[dict] = []
    orm, summary = read_examples([str(tmp_path)], "train", "orm", tokenizer, "\n", 32, "correct", "step_labels", dead)
    assert [len(e.tokens) for e in orm] == [7, 7]
    assert [e.positions.tolist() for e in orm] == [[6], [6]]  # the response's last token
    assert [e.targets.tolist() for e in orm] == [[1.0], [0.25]]
    assert summary.dropped == {"empty_response": 1, "label_out_of_range": 1, "too_long": 1, "not_json": 1}
    assert [d["line"] for d in dead] == [3, 4, 5, 6]
    prm, summary = read_examples([str(path)], "train", "prm", tokenizer, "\n", 64, "correct", "step_labels")
    # Steps "12" and "34": read at their last characters (the prompt is 2 tokens); a PRM reads no
    # outcome label, so the fourth record is usable here.
    assert [e.positions.tolist() for e in prm] == [[3, 6], [3, 6], [41]]
    assert summary.dropped == {"labels_do_not_match_steps": 1, "empty_response": 1, "not_json": 1}
    # An ORM pooling step ends reads a PRM's positions, each with the outcome label.
    pooled, _ = read_examples(
        [str(path)], "train", "orm", tokenizer, "\n", 32, "correct", "step_labels", outcome_pooling="step_product"
    )
    assert [e.positions.tolist() for e in pooled] == [[3, 6], [3, 6]]
    assert [e.targets.tolist() for e in pooled] == [[1.0, 1.0], [0.25, 0.25]]


def test_validation_split_keeps_questions_on_one_side_and_is_checked(tmp_path):
    tokenizer = CharacterTokenizer()
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": "Q", "response": f"{i}", "correct": i % 2, "question": f"q{i % 40}"}) + "\n"
            for i in range(400)
        )
    )
    examples, _ = read_examples([str(path)], "train", "orm", tokenizer, "\n", 16, "correct", "step_labels")
    train, validation = split_by_question(examples, 0.25, seed=5)
    assert 0 < len(validation) < len(examples)
    assert not {e.question for e in train} & {e.question for e in validation}
    check_no_shared_questions(validation, train)
    with pytest.raises(ConfigError, match="validation question"):
        check_no_shared_questions(validation, examples)


def _examples(count: int, question: str):
    tokenizer = CharacterTokenizer()
    records = [
        {"prompt": "Q", "response": "x" * (1 + i % 5), "correct": i % 2, "question": question} for i in range(count)
    ]
    return [example_from_record(r, "orm", tokenizer, "\n", 64, "correct", "step_labels") for r in records]


def test_replay_batches_hold_an_exact_fraction_and_resume_at_any_step():
    new, old = _examples(37, "new"), _examples(11, "old")
    batches = RewardBatches(new, old, global_batch_size=20, replayed_per_batch=2, seed=3)
    for step in range(30):
        items = batches.global_batch(step)
        assert len(items) == 20 and sum(replayed for _, replayed in items) == 2
        assert all(e.question == ("old" if replayed else "new") for e, replayed in items)
    # Position-based: a fresh object (a resumed run) reads the same batch.
    again = RewardBatches(new, old, 20, 2, seed=3)
    assert [id(e) for e, _ in batches.global_batch(17)] == [id(e) for e, _ in again.global_batch(17)]
    # Every new record is read once per epoch: 37 steps of 18 are 18 epochs of the 37 records.
    seen = Counter(id(e) for step in range(37) for e, replayed in batches.global_batch(step) if not replayed)
    assert len(seen) == 37 and set(seen.values()) == {18}
    parts = micro_batches(batches.global_batch(0), 5, rank=1, ranks=2, pad_id=0, multiple=8)
    assert len(parts) == 2 and parts[0]["tokens"].shape == (5, 8)
    assert RewardModelSettings(replay_fraction=0.1).replayed_per_batch(20) == 2
    with pytest.raises(ConfigError, match="not a whole number of records"):
        RewardModelSettings(replay_fraction=0.1).replayed_per_batch(32)


def test_loss_and_auc_agree_with_their_references():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, generator=generator)
    targets = torch.tensor([[0, 1, 0, 0, 0.5, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0.2]])
    mask = torch.tensor([[0, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 1.0]])
    numerator, denominator, metrics = reward_loss(scores, targets, mask)
    assert float(numerator / denominator) == pytest.approx(
        reference_reward_loss(scores.tolist(), targets.tolist(), mask.tolist()), rel=1e-6
    )
    assert int(denominator) == 7 and float(metrics["accuracy"][1]) == 7
    # Step-product pooling: one term per row with a scored position (a row without one counts
    # nothing); the wrong row's gradient is largest at its least likely step.
    outcome = torch.tensor([[1.0] * 6, [0.0] * 6, [1.0] * 6]) * mask
    pooled_scores = (scores * 3).requires_grad_(True)
    numerator, denominator, metrics = pooled_outcome_loss(
        pooled_scores, outcome, mask * torch.tensor([[1.0], [1.0], [0.0]])
    )
    assert int(denominator) == 2 and float(metrics["positive"][0]) == 1.0
    reference = reference_pooled_outcome_loss(
        pooled_scores.tolist(), outcome.tolist(), (mask * torch.tensor([[1.0], [1.0], [0.0]])).tolist()
    )
    assert float((numerator / denominator).detach()) == pytest.approx(reference, rel=1e-6)
    wrong = torch.tensor([[2.0, -1.0, 3.0]], requires_grad=True)
    pooled_outcome_loss(wrong, torch.zeros(1, 3), torch.ones(1, 3))[0].backward()
    assert bool((wrong.grad > 0).all()) and int(wrong.grad.argmax()) == 1
    rng = random.Random(1)
    values = [round(rng.random(), 1) for _ in range(200)]  # many ties
    labels = [float(rng.random() < v) for v in values]
    assert roc_auc(values, labels) == pytest.approx(reference_roc_auc(values, labels), abs=1e-12)
    assert roc_auc([1, 2, 3], [0, 1, 1]) == 1.0 and roc_auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert math.isnan(roc_auc([1, 2], [1, 1]))


def test_gae_and_the_clipped_value_loss_agree_with_their_references():
    generator = torch.Generator().manual_seed(2)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1.0]])  # a gap (tool output)
    rewards = torch.randn(3, 6, generator=generator) * mask
    values = torch.randn(3, 6, generator=generator)
    inputs = AdvantageInputs(
        torch.zeros(3), torch.arange(3), mask, 1e-4, token_rewards=rewards, values=values, gamma=0.9, lam=0.8
    )
    estimator = get_advantage_estimator("gae")
    assert estimator.needs_values
    raw = estimator(AdvantageInputs(**{**inputs.__dict__, "whiten": False}))
    expected, returns = reference_gae_advantages(rewards.tolist(), values.tolist(), mask.tolist(), 0.9, 0.8)
    torch.testing.assert_close(raw.tokens, torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw.returns, torch.tensor(returns), atol=1e-5, rtol=0)
    whitened = estimator(inputs).tokens
    trained = whitened[mask > 0]
    assert float(trained.mean()) == pytest.approx(0.0, abs=1e-5) and float(trained.std()) == pytest.approx(1.0, 1e-3)
    current, old, target = (
        torch.randn(3, 4, generator=generator),
        torch.randn(3, 4, generator=generator),
        torch.randn(3, 4),
    )
    loss, _ = clipped_value_loss(current, old, target, 0.2)
    for i in range(3):
        for j in range(4):
            assert float(loss[i, j]) == pytest.approx(
                reference_clipped_value_loss(float(current[i, j]), float(old[i, j]), float(target[i, j]), 0.2), 1e-5
            )


def _sample(text: str, reference: str = "3") -> RolloutSample:
    return RolloutSample(group=0, question_id="q", reference=reference, prompt_ids=[1], text=text)


def test_compute_rewards_adds_outcome_and_process_reward_model_scores():
    good, bad = "8 - 6 = 2\nThe answer is $\\boxed{3}$.", "8 - 6 = 1\nThe answer is $\\boxed{2}$."
    samples = [_sample(good), _sample(bad)]
    compute_rewards(samples, ["math_accuracy"], [0.5], model_scores=ModelScores(False, [[0.9], [0.2]], weight=2.0))
    assert [s.rewards[MODEL_REWARD] for s in samples] == [0.9, 0.2]
    assert [s.reward for s in samples] == pytest.approx([0.5 + 1.8, 0.0 + 0.4])
    samples = [_sample(good), _sample(bad)]
    compute_rewards(samples, ["math_accuracy"], [1.0], model_scores=ModelScores(True, [[0.9, 0.8], [0.1, 0.3]]))
    # Step scores at the steps' ends; the weighted rule-based reward joins the last step.
    assert [(s.end, s.reward) for s in samples[0].steps] == [(9, 0.9), (len(good), pytest.approx(1.8))]
    assert [s.reward for s in samples[1].steps] == [0.1, 0.3]
    assert samples[1].rewards[MODEL_REWARD] == 0.1
    with pytest.raises(ValueError, match="step scores"):
        compute_rewards([_sample(good)], ["math_accuracy"], [1.0], model_scores=ModelScores(True, [[0.5]]))


def test_kinds_and_configs_fail_with_one_line():
    assert {"orm", "prm", "value"} <= set(REWARD_MODEL_KINDS)
    assert kind_of_hf_class("LlamaForSequenceClassification") == "orm"
    assert kind_of_hf_class(get_reward_model_kind("prm").hf_class) == "prm"
    with pytest.raises(KeyError, match="unknown reward model kind 'xrm'"):
        get_reward_model_kind("xrm")
    with pytest.raises(ConfigError, match="reward_model.kind='value' is not one of orm, prm"):
        RewardModelSettings(kind="value", train_paths=["x"]).validate()
    with pytest.raises(ConfigError, match="replay_paths"):
        RewardModelSettings(train_paths=["x"], replay_fraction=0.1).validate()
    with pytest.raises(ConfigError, match="outcome_pooling=step_product is for kind=orm"):
        RewardModelSettings(kind="prm", train_paths=["x"], outcome_pooling="step_product").validate()
    with pytest.raises(ConfigError, match="reward_model.outcome_pooling='mean' is not one of"):
        RewardModelSettings(train_paths=["x"], outcome_pooling="mean").validate()
    with pytest.raises(ConfigError, match="rl.advantage_estimator=process needs step rewards"):
        RlConfig(advantage_estimator="process").validate()
    with pytest.raises(ConfigError, match="both give step rewards"):
        RlConfig(advantage_estimator="process", step_reward="arithmetic_steps", reward_model="x").validate()
    RlConfig(advantage_estimator="process", reward_model="x").validate()
    RlConfig(advantage_estimator="gae").validate()
    with pytest.raises(ConfigError, match="iterative.reward_model must name"):
        IterativeConfig(policy="p").validate()
