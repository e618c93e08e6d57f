"""Held-out questions that are held out: the train/held-out split by a hash of the normalised
question, generator seeds that do not shift one sequence, the overlap check every held-out set
goes through, and task specs with list values."""

from __future__ import annotations

import json

import pytest

from megatron_recipes.config import GrpoConfig, register_configs
from megatron_recipes.data.config import ARITHMETIC_TASK, ChatTemplateConfig, PromptSourceConfig
from megatron_recipes.data.rl_prompts import (
    PromptRecord,
    PromptStream,
    drop_overlapping,
    normalise_question,
    parse_task_spec,
    question_split,
)
from megatron_recipes.recipes.grpo import held_out_questions
from stack_common.cli import compose_config
from stack_common.errors import ConfigError

TEMPLATE = ChatTemplateConfig()
# Another task, of 4,000 distinct questions.
THREE_TERMS = "chain_sum:min_terms=3,max_terms=3,min_digits=1,max_digits=1"


def questions(config: PromptSourceConfig, count: int) -> list[str]:
    return [record.question for record in PromptStream(config, TEMPLATE).take(0, count)]


def test_nearby_seeds_draw_unrelated_questions_not_a_shifted_copy():
    # reasoning-gym draws item k of seed s from Random(s + k): unmixed, seed 6 would be seed 5 shifted by one.
    five = questions(PromptSourceConfig(tasks=[ARITHMETIC_TASK], seed=5, split="all"), 201)
    six = questions(PromptSourceConfig(tasks=[ARITHMETIC_TASK], seed=6, split="all"), 200)
    shifted_matches = sum(a == b for a, b in zip(five[1:], six))
    assert shifted_matches <= 2, shifted_matches
    assert len(set(five) & set(six)) <= 20  # 5,324 distinct questions: a few coincide by chance


@pytest.mark.parametrize("task", [ARITHMETIC_TASK, THREE_TERMS])
def test_train_and_held_out_sides_never_share_a_question(task):
    held_out = questions(PromptSourceConfig(tasks=[task], seed=4321, split="held_out"), 200)
    assert all(question_split(q, 0.1) == "held_out" for q in held_out)
    for seed in (1234, 4321, 99, 7):  # the seeds the chain and the tests draw training data with
        train = questions(PromptSourceConfig(tasks=[task], seed=seed, split="train"), 3000)
        assert not set(map(normalise_question, train)) & set(map(normalise_question, held_out)), (task, seed)
    everything = questions(PromptSourceConfig(tasks=[task], seed=1, split="all"), 4000)
    fraction = sum(question_split(q, 0.1) == "held_out" for q in set(everything)) / len(set(everything))
    assert 0.07 < fraction < 0.13, fraction


def test_the_split_depends_on_the_question_text_only():
    assert question_split("Calculate 47 - 83.", 0.5) == question_split("  calculate 47 -  83.\n", 0.5)
    sides = {question_split(f"Calculate {a} + 1.", 0.3) for a in range(100)}
    assert sides == {"train", "held_out"}
    # A larger fraction holds out a superset: growing the held-out side never moves a question into training.
    small = {a for a in range(500) if question_split(f"Calculate {a} + 1.", 0.1) == "held_out"}
    large = {a for a in range(500) if question_split(f"Calculate {a} + 1.", 0.3) == "held_out"}
    assert small < large


def test_grpo_default_held_out_prompts_are_not_training_prompts():
    config = compose_config("grpo", ["+experiment=grpo_tiny_cpu", "trainer.train_steps=100"], register_configs)
    assert (config.prompts.split, config.eval_prompts.split) == ("train", "held_out")
    prompts = PromptStream(config.prompts, config.chat_template)
    held_out, overlaps = held_out_questions(config, prompts)
    # eval_prompts.limit (64) questions are drawn; repeated ones count once.
    drawn = PromptStream(config.eval_prompts, config.chat_template).take(0, 64)
    assert len(held_out) == len({normalise_question(r.question) for r in drawn}) >= 48
    assert overlaps == {"grpo_prompts": 0, "total": 0}
    trained = {r.question for r in prompts.take(0, 100 * config.rl.questions_per_step)}
    assert not trained & {r.question for r in held_out}


def test_an_overlapping_held_out_source_is_cut_back_and_counted():
    # The old default: held-out = the training task at another seed, no split. With the old seed
    # arithmetic 32 of its 64 questions were training questions; the check removes whatever overlaps.
    config = GrpoConfig()
    one_digit_sums = "basic_arithmetic:min_digits=1,max_digits=1,min_terms=2,max_terms=2"
    config.prompts = PromptSourceConfig(tasks=[one_digit_sums], split="all")
    config.eval_prompts = PromptSourceConfig(tasks=[one_digit_sums], seed=4321, split="all", limit=64)
    config.trainer.train_steps, config.rl.questions_per_step = 50, 8
    prompts = PromptStream(config.prompts, config.chat_template)
    held_out, overlaps = held_out_questions(config, prompts)
    trained = {normalise_question(r.question) for r in prompts.take(0, 400)}
    assert overlaps["total"] == overlaps["grpo_prompts"] > 0  # one-digit sums: 121 questions, 400 drawn
    drawn = {
        normalise_question(r.question) for r in PromptStream(config.eval_prompts, config.chat_template).take(0, 64)
    }
    assert len(held_out) == len(drawn) - overlaps["total"]  # repeated questions count once
    assert not trained & {normalise_question(r.question) for r in held_out}
    config.eval_prompts = PromptSourceConfig(tasks=[one_digit_sums], split="all", limit=64)  # the training stream
    with pytest.raises(ConfigError, match=r"all \d+ held-out questions are GRPO training questions"):
        held_out_questions(config, prompts)


def test_drop_overlapping_counts_each_training_set():
    held_out = [PromptRecord(str(i), q, "0", q) for i, q in enumerate(["What is 1+1?", "What  is 2+2?", "3+3"])]
    kept, removed = drop_overlapping(held_out, {"sft": ["what is 2+2?"], "text": ["WHAT IS 1+1?", "what is 2+2?"]})
    assert [r.question for r in kept] == ["3+3"]
    assert removed == {"sft": 1, "text": 2, "total": 2}


def test_file_sources_split_too(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(300))
    )

    def side(split: str) -> set[str]:
        stream = PromptStream(PromptSourceConfig(source="gsm8k", path=str(path), split=split), TEMPLATE)
        return {r.question for r in stream.take(0, len(stream))}

    train, held_out, everything = side("train"), side("held_out"), side("all")
    assert train | held_out == everything and not train & held_out and len(everything) == 300
    assert 10 < len(held_out) < 60
    one = tmp_path / "one.jsonl"
    question = next(q for q in train)
    one.write_text(json.dumps({"question": question, "answer": "#### 1"}) + "\n")
    with pytest.raises(ConfigError, match="held_out split .* yields no question"):
        PromptStream(PromptSourceConfig(source="gsm8k", path=str(one), split="held_out"), TEMPLATE)


def test_split_settings_are_checked():
    with pytest.raises(ConfigError, match="eval_prompts.split='test' is not one of train, held_out, all"):
        PromptSourceConfig(split="test").validate("eval_prompts")
    with pytest.raises(ConfigError, match="prompts.held_out_fraction=1"):
        PromptSourceConfig(held_out_fraction=1).validate()


def test_task_specs_take_lists():
    assert parse_task_spec("basic_arithmetic:operators=+,-,min_terms=2") == (
        "basic_arithmetic",
        {"operators": ["+", "-"], "min_terms": 2},
    )
    assert parse_task_spec("basic_arithmetic:operators=[+,-],max_terms=3")[1] == {
        "operators": ["+", "-"],
        "max_terms": 3,
    }
    assert parse_task_spec("basic_arithmetic:operators=-")[1] == {"operators": "-"}  # YAML would read '-' as a list
    with pytest.raises(ConfigError, match="key=value"):
        parse_task_spec("basic_arithmetic:+,-")


@pytest.mark.parametrize(
    "operators,expected",
    [("operators=+,-", {"+", "-"}), ("operators=[+,-]", {"+", "-"}), ("operators=-", {"-"}), ("operators=*", {"*"})],
)
def test_listed_operators_reach_the_generator(operators, expected):
    task = f"basic_arithmetic:{operators},min_terms=2,max_terms=2,allow_parentheses=false,allow_negation=false"
    seen = {q.split()[2] for q in questions(PromptSourceConfig(tasks=[task], split="all"), 60)}
    assert seen == expected
