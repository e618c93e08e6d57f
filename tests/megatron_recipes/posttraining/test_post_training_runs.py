"""The post-training entry points for real, on one SFT'd tiny model per test session
(conftest.sft_run): SFT runs and resumes; GRPO raises accuracy on held-out questions, none of which
any training set of the test holds (and, from an SFT model taught 40% wrong answers, makes correct
answers more likely); the evaluate entry point scores the checkpoint with the megatron generator;
TP=2 (torchrun) computes the same GRPO losses as TP=1 on the same rollout batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_recipes.data.config import ChatTemplateConfig
from megatron_recipes.data.rl_prompts import PromptStream, distinct_records
from megatron_recipes.training.checkpointing import latest_iteration, read_checkpoint_info
from megatron_recipes.training.metrics import read_metrics
from tests.megatron_recipes.posttraining.arithmetic import (
    chat_texts,
    held_out_records,
    prompt_config,
    stated_answer,
    train_small_tokenizer,
    write_arithmetic_sft,
)
from tests.megatron_recipes.posttraining.conftest import (
    GRPO_STEPS,
    SFT_STEPS,
    SFT_STEPS_FIRST,
    grpo_overrides,
    sft_overrides,
)
from tests.support import REPO_ROOT, metric_row_steps, run_module, subprocess_env

DRIVER = Path(__file__).with_name("grpo_layout_driver.py")
# Accuracy gains (fraction) on held-out questions at temperature 1 (35 questions x 4 samples); the
# measured gains are in the tests. The runs are bit for bit the same on any x86-64 machine.
HELD_OUT_GAIN = 0.10
NOISY_SFT_GAIN = 0.0  # held-out: no loss (see the test's docstring)
# The noisy-SFT run's mean training reward, last 10 steps over first 10 (640 outputs each). One
# step's mean reward has a standard error of ~0.06 (64 outputs), so the difference of two 10-step
# means has ~0.027: the bar sits ~2 standard errors above "GRPO learns nothing", below the gains
# measured (0.111 and 0.077: the same seeds after changes to GRPO's summation order).
NOISY_SFT_REWARD_GAIN = 0.05


@pytest.mark.integration
def test_sft_entry_point_trains_and_resumes(sft_run):
    assert latest_iteration(sft_run.checkpoints) == SFT_STEPS
    info = read_checkpoint_info(sft_run.checkpoints)
    assert info["train_state"]["consumed_samples"] == SFT_STEPS * 16
    assert info["train_state"]["extra"]["tokenizer"].startswith(str(sft_run.tokenizer))
    data = info["train_state"]["extra"]["sft_data"]
    assert (data["examples"], data["kinds"], data["attention"]) == (3000, {"cot": 3000}, "mask")
    assert data["sequences"] > 0 and data["trained_tokens"] > 0
    # The second command resumed from the first one's last checkpoint: its first row is the next step.
    steps = metric_row_steps(sft_run.output_dir / "metrics.jsonl")
    assert steps[: SFT_STEPS_FIRST + 1] == [*range(1, SFT_STEPS_FIRST + 1), SFT_STEPS_FIRST + 1]
    rows = read_metrics(sft_run.output_dir / "metrics.jsonl")
    assert sorted(rows) == list(range(1, SFT_STEPS + 1))
    # The loss is over response tokens only and it learned: far below its start.
    assert rows[SFT_STEPS]["loss"] < 0.3 * rows[1]["loss"]


@pytest.mark.integration
def test_grpo_raises_accuracy_on_held_out_questions(grpo_run, sft_run):
    rows = read_metrics(grpo_run.output_dir / "metrics.jsonl")
    # Held-out accuracy: every question of the held-out side of the split (35) x 4 samples at the
    # rollout temperature, graded by math_accuracy, before the first step and after the last.
    held_out = {record.question for record in held_out_records()}
    assert rows[0]["validation_problems"] == len(held_out) * 4 == 140
    # None of them is an SFT question or a question GRPO trained on (checked here on the files and
    # streams, and by the entry point itself, which recorded an empty overlap).
    sft_questions = {
        json.loads(line)["messages"][0]["content"].split("\n")[0] for line in sft_run.data.read_text().splitlines()
    }
    grpo_questions = {
        record.question
        for record in PromptStream(prompt_config(seed=1234), ChatTemplateConfig()).take(0, GRPO_STEPS * 8)
    }
    assert len(sft_questions) > 60 and not held_out & sft_questions and not held_out & grpo_questions
    extra = read_checkpoint_info(grpo_run.checkpoints)["train_state"]["extra"]
    assert extra["held_out"] == {"questions": 35, "overlaps_dropped": {"grpo_prompts": 0, "total": 0}}
    # Measured: 0.229 -> 0.343 (0.164 at step 10, 0.393 at step 20); training reward 0.5 -> 0.75.
    before, after = rows[0]["validation_accuracy"], rows[GRPO_STEPS]["validation_accuracy"]
    print(f"held-out accuracy {before:.3f} -> {after:.3f}")
    assert after - before >= HELD_OUT_GAIN, (before, after)
    # Every documented metric is logged for every step.
    for step in range(1, GRPO_STEPS + 1):
        for name in (
            "loss",
            "reward_mean",
            "reward_std",
            "accuracy",
            "kl",
            "clip_fraction",
            "entropy",
            "response_length",
            "zero_variance_groups",
            "rollout_tokens_per_second",
            "training_tokens_per_second",
            "lr",
            "grad_norm",
        ):
            assert name in rows[step], (step, name)
    assert rows[1]["updates"] == 2 and 0 <= rows[1]["zero_variance_groups"] <= 1
    assert any(
        event.name.startswith("events.out.tfevents") for event in (grpo_run.output_dir / "tensorboard").iterdir()
    )
    log = grpo_run.result.stderr
    assert "reward_mean" in log and "validation at step 0 | accuracy" in log
    # The final policy was saved with its tokenizer, loadable by the next stage.
    info = read_checkpoint_info(grpo_run.checkpoints)
    assert info["iteration"] == GRPO_STEPS and info["train_state"]["consumed_samples"] == GRPO_STEPS * 8
    assert info["train_state"]["extra"]["tokenizer"]


def evaluate_checkpoint(checkpoints: Path, heldout: Path, output_dir: Path) -> tuple[dict, list[dict]]:
    result = run_module(
        "megatron_recipes.evaluate",
        "dataset=gsm8k",
        f"dataset.path={heldout}",
        "prompt_style=zero_shot",
        "generator=megatron",
        f"generator.checkpoint={checkpoints}",
        "sampling.max_new_tokens=24",
        f"output_dir={output_dir}",
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output_dir / "results.json").read_text())["summary"]
    records = [json.loads(line) for line in (output_dir / "records.jsonl").read_text().splitlines()]
    return summary, records


def stated_right(records: list[dict]) -> float:
    """The fraction of greedy answers that state the reference sum, in either taught style."""
    return sum(stated_answer(r["samples"][0]["text"]) == r["references"][0] for r in records) / len(records)


@pytest.mark.integration
def test_grpo_unlearns_wrong_answers_taught_by_sft(tmp_path):
    """The session's learning test rewards a format the SFT data used a third of the time; here
    every SFT answer is boxed (so always graded) but 40% of them are off by one, so the SFT'd model
    samples wrong sums. GRPO must make correct answers more likely on the questions it trains on
    (mean training reward 0.394 over the first 10 steps -> 0.505 over the last 10 when written;
    0.391 -> 0.467 on the main of 2026-12-07 evening, after changes to GRPO's passes) without
    costing held-out accuracy. The held-out gain, on sums the model never saw, is small: 0.314 ->
    0.336, later 0.314 -> 0.386, over 60 steps here (35 questions x 4 samples, about 0.04 standard
    error); benchmarks/grpo_heldout_gain.py measures it on 200 questions x 3 seed sets. (The
    15.6-26.9-point gains once measured here were on held-out questions that overlapped the
    training stream.)"""
    seed, steps = 7, 60
    records = write_arithmetic_sft(tmp_path / "sft.jsonl", 3000, noise=0.4, seed=seed)
    assert 0.3 < sum(r["noisy"] for r in records) / len(records) < 0.5
    tokenizer = train_small_tokenizer(tmp_path / "tokenizer", chat_texts(records))
    sft = run_module(
        "megatron_recipes.sft",
        *sft_overrides(tmp_path / "sft.jsonl", tokenizer, tmp_path / "sft", SFT_STEPS),
        OMP_NUM_THREADS="1",
    )
    assert sft.returncode == 0, sft.stderr[-4000:]
    grpo = run_module(
        "megatron_recipes.grpo",
        *grpo_overrides(tmp_path / "sft" / "checkpoints", tmp_path / "grpo", steps),
        OMP_NUM_THREADS="1",
    )
    assert grpo.returncode == 0, grpo.stderr[-4000:]
    rows = read_metrics(tmp_path / "grpo" / "metrics.jsonl")
    before, after = rows[0]["validation_accuracy"], rows[steps]["validation_accuracy"]
    rewards = [rows[step]["reward_mean"] for step in range(1, steps + 1)]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    print(f"held-out accuracy (noisy SFT) {before:.3f} -> {after:.3f}; training reward {first:.3f} -> {last:.3f}")
    assert len(rewards) == steps and last - first >= NOISY_SFT_REWARD_GAIN, (first, last)
    assert after - before >= NOISY_SFT_GAIN, (before, after)


@pytest.mark.integration
def test_evaluate_scores_checkpoints_with_the_megatron_generator(sft_run, grpo_run, tmp_path):
    # Questions the SFT model was trained on: this test is about the evaluate entry point, not about
    # generalisation, and on them the models state the right sum nearly always. On the held-out side
    # the tiny model knows few one-digit sums it never saw (greedy: 0.344 for the SFT model, 0.219
    # after GRPO), a figure that would sit close to any threshold.
    questions = distinct_records(PromptStream(prompt_config(seed=99), ChatTemplateConfig()).take(0, 200))[:32]
    assert len(questions) == 32
    path = tmp_path / "questions.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": r.question, "answer": f"{r.question} is {r.answer}.\n#### {r.answer}"}) + "\n"
            for r in questions
        )
    )
    before, before_records = evaluate_checkpoint(sft_run.checkpoints, path, tmp_path / "sft_eval")
    after, records = evaluate_checkpoint(grpo_run.checkpoints, path, tmp_path / "grpo_eval")
    print(f"evaluate (greedy, GSM8K format, zero-shot): SFT {before['accuracy']:.3f} -> GRPO {after['accuracy']:.3f}")
    assert before["problems"] == after["problems"] == 32 and len(records) == 32
    # The zero-shot prompt is the SFT chat template, the answers come from the checkpoints' model.
    assert records[0]["prompt"] == questions[0].prompt
    assert all(r["samples"][0]["finish_reason"] == "stop" for r in records)  # every answer ended with EOD
    # Every graded-correct answer is in the graded style and states the reference.
    for summary, scored in ((before, before_records), (after, records)):
        correct = [r for r in scored if r["samples"][0]["correct"]]
        assert summary["accuracy"] == len(correct) / 32
        assert all("boxed" in r["samples"][0]["text"] for r in correct)
    # What does not swing between machines or runs is what the models know: the sum each greedy
    # answer states, in either taught style. A broken loader or generator states no right sums.
    # Which style the SFT model picks under greedy decoding is a coin toss per question (half its SFT
    # answers are ungraded), so its graded accuracy is not asserted; GRPO rewarded the graded style
    # (training reward 0.48 -> 0.78 at T=1), so most of its greedy answers are graded right.
    knows_before, knows_after = stated_right(before_records), stated_right(records)
    print(f"evaluate (greedy): sums stated right SFT {knows_before:.3f} -> GRPO {knows_after:.3f}")
    assert knows_before >= 0.6 and knows_after >= 0.6, (knows_before, knows_after)
    assert after["accuracy"] >= 0.5, (after, knows_after)


@pytest.mark.integration
def test_evaluate_refuses_megatron_without_a_checkpoint():
    result = run_module("megatron_recipes.evaluate", "generator=megatron")
    assert result.returncode == 2
    assert "generator=megatron needs generator.checkpoint" in result.stderr


@pytest.mark.integration
def test_tensor_parallel_grpo_losses_equal_tensor_parallel_1(sft_run, tmp_path):
    env = subprocess_env(OMP_NUM_THREADS="1")
    init = str(sft_run.checkpoints)
    reference = subprocess.run(
        [sys.executable, str(DRIVER), "reference", "--work", str(tmp_path), "--init", init],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-4000:]
    layouts = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(DRIVER),
            "layouts",
            "--work",
            str(tmp_path),
            "--init",
            init,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert layouts.returncode == 0, layouts.stderr[-4000:]
    expected = json.loads((tmp_path / "reference.json").read_text())
    results = json.loads((tmp_path / "layouts.json").read_text())
    assert len(expected["losses"]) == 2  # both updates ran (the batch has groups with a reward spread)
    assert results["tp2"]["layout"]["tensor_parallel"] == 2 and results["dp2"]["layout"]["data_parallel"] == 2
    for name in ("tp2", "dp2"):
        result = results[name]
        for key in ("losses", "kl", "clip_fraction", "grad_norms"):
            # fp32 sums in another order: 1e-5 absolute, or relative for large values (the KL
            # after one update of the tiny model reaches ~80).
            assert result[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-5), (
                name,
                key,
                result[key],
                expected[key],
            )
        assert result["tokens"] == expected["tokens"]
        assert result["greedy"] == expected["greedy"]  # generation at TP=2 = TP=1, token for token
    # The second update is off-policy (ratios != 1): it differs from the first.
    assert expected["losses"][0] != pytest.approx(expected["losses"][1], abs=1e-7)


@pytest.mark.integration
def test_grpo_resumes_with_the_reset_reference_of_iterative_grpo(sft_run, tmp_path):
    def run(steps: int):
        overrides = [
            *grpo_overrides(sft_run.checkpoints, tmp_path / "grpo", steps),
            "rl.eval_interval=0",
            "rl.reference_reset_interval=2",
            "checkpoint.save_interval=2",
            "trainer.tensorboard=false",
        ]
        result = run_module("megatron_recipes.grpo", *overrides, OMP_NUM_THREADS="1")
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    run(4)
    checkpoints = tmp_path / "grpo" / "checkpoints"
    assert latest_iteration(checkpoints) == 4 and latest_iteration(checkpoints / "reference") == 4
    # The checkpoint a resumed run starts from names the reset reference it reloads.
    extra = read_checkpoint_info(checkpoints)["train_state"]["extra"]
    assert extra["reference_checkpoint"] == str(checkpoints / "reference" / "iter_0000004")
    assert extra["reference_iteration"] == 4 and extra["reference_saved"]
    run(6)
    assert metric_row_steps(tmp_path / "grpo" / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]  # resumed at step 4
    kl = {step: row["kl"] for step, row in read_metrics(tmp_path / "grpo" / "metrics.jsonl").items()}
    # Right after each reset the policy starts from the reference again: KL falls back.
    assert kl[3] < kl[2] and kl[5] < kl[4], kl
    assert read_checkpoint_info(checkpoints)["train_state"]["consumed_samples"] == 6 * 8
