"""The R1 chain end to end (python launch/local/chain.py chain=r1) at the reduced `ci` sizes:
every stage runs for real as a subprocess and starts from the stage it should; the held-out
questions stay out of every training file; every kept rejection sample passes the checker when
re-checked here and the summary's counts add up; the summary gives the held-out accuracy after
each stage and the distillation-vs-RL comparison of the student; a rerun skips every stage."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_recipes.config import register_configs
from megatron_recipes.rewards import get_reward
from megatron_recipes.training.checkpointing import read_checkpoint_info
from stack_common.cli import compose_config
from tests.support import REPO_ROOT, subprocess_env

CHAIN = REPO_ROOT / "launch" / "local" / "chain.py"
STAGES = (
    "task",
    "tokenize",
    "pretrain",
    "cold_start",
    "reasoning_rl",
    "rejection_sample",
    "sft",
    "final_rl",
    "student_pretrain",
    "distill",
    "evaluate_distill",
    "student_rl",
)
# conf/chain_size/ci.yaml
STEPS = {
    "pretrain": 20,
    "cold_start": 10,
    "reasoning_rl": 10,
    "sft": 10,
    "final_rl": 10,
    "student_pretrain": 20,
    "distill": 10,
    "student_rl": 10,
}
# The training run each one starts from.
STARTS_FROM = {
    "cold_start": "pretrain",
    "reasoning_rl": "cold_start",
    "sft": "pretrain",
    "final_rl": "sft",
    "distill": "student_pretrain",
    "student_rl": "student_pretrain",
}


def run_chain(*overrides: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHAIN), "chain=r1", *overrides],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dry_run_commands(stdout: str) -> dict[str, list[list[str]]]:
    commands: dict[str, list[list[str]]] = {}
    stage = ""
    for line in stdout.splitlines():
        if line.startswith("# ") and "/12 " in line:
            stage = line.split("/12 ", 1)[1].split()[0]
            commands[stage] = []
        elif stage and line.strip():
            words = shlex.split(line.removeprefix("# "))
            assert words[:2] == [sys.executable, "-m"], line
            commands[stage].append(words[2:])
    return commands


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("r1_chain") / "work"
    result = run_chain("chain_size=ci", f"work_dir={work}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result


@pytest.mark.integration
def test_every_r1_stage_runs_and_starts_from_the_stage_before(chain):
    work, result = chain
    for number, stage in enumerate(STAGES, 1):
        assert f"[chain] {number:2d}/12 {stage:<15} done in" in result.stdout, stage
    for run, steps in STEPS.items():
        status = read(work / run / "checkpoints" / "exit_status.json")
        assert status["reason"] == "finished" and status["iteration"] == steps, (run, status)
    logs = {stage: (work / "logs" / f"{n:02d}_{stage}.log").read_text() for n, stage in enumerate(STAGES, 1)}
    for run, start in STARTS_FROM.items():
        expected = work / start / "checkpoints" / f"iter_{STEPS[start]:07d}"
        assert f"initialised model weights from {expected}" in logs[run], run
    # The student is the smaller Qwen2-style model: its checkpoints say so.
    student = read_checkpoint_info(work / "distill" / "checkpoints" / f"iter_{STEPS['distill']:07d}")
    teacher = read_checkpoint_info(work / "sft" / "checkpoints" / f"iter_{STEPS['sft']:07d}")
    assert student["model_config"]["num_layers"] == 2 and student["model_config"]["add_qkv_bias"] is True
    assert teacher["model_config"]["num_layers"] == 4 and not teacher["model_config"]["add_qkv_bias"]


@pytest.mark.integration
def test_held_out_questions_stay_out_of_every_training_file(chain):
    work, _ = chain
    manifest = read(work / "task" / "manifest.json")
    assert manifest["heldout_overlap_with_training_sums"] == 0
    heldout = {row["question"] for row in rows(work / "task" / "prompts_heldout.jsonl")}
    assert len(heldout) == 16
    trained_on = {row["question"] for row in rows(work / "task" / "prompts_train.jsonl")}
    trained_on |= {row["question"] for row in rows(work / "task" / "cold_start.jsonl")}
    assert not heldout & trained_on
    sampled = {row["provenance"]["prompt_id"] for row in rows_of(work / "rejection_sample" / "samples")}
    assert sampled and not sampled & {row["id"] for row in rows(work / "task" / "prompts_heldout.jsonl")}


def rows_of(directory: Path) -> list[dict]:
    return [row for path in sorted(directory.glob("*.jsonl")) for row in rows(path)]


@pytest.mark.integration
def test_kept_samples_pass_the_checker_and_the_counts_add_up(chain):
    work, _ = chain
    summary = read(work / "rejection_sample" / "summary.json")
    samples, kept = rows_of(work / "rejection_sample" / "samples"), rows_of(work / "rejection_sample" / "kept")
    assert summary["prompts"] == 16 and summary["samples"] == len(samples) == 16 * 8
    assert summary["kept"] == len(kept)
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["samples"]
    answers = {row["id"]: row["answer"] for row in rows(work / "task" / "prompts_train.jsonl")}
    texts = [row["messages"][1]["content"] for row in kept]
    references = [answers[row["provenance"]["prompt_id"]] for row in kept]
    assert get_reward("think_accuracy")(texts, references) == [1.0] * len(kept)
    for row in kept:
        assert row["provenance"]["checkpoint"].startswith(str(work / "reasoning_rl" / "checkpoints"))


@pytest.mark.integration
def test_the_summary_reports_accuracy_after_each_stage_and_the_student_comparison(chain):
    work, result = chain
    summary = read(work / "chain_summary.json")
    accuracy = summary["heldout_accuracy"]
    assert set(accuracy) == {
        "cold_start",
        "reasoning_rl",
        "sft",
        "final_rl",
        "student_pretrain",
        "distill",
        "student_rl",
    }
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    # The distilled student is scored by the evaluate entry point on the same held-out file.
    evaluation = read(work / "evaluate" / "distill" / "results.json")["summary"]
    assert evaluation["problems"] == 16 and accuracy["distill"] == evaluation["accuracy"]
    comparison = summary["distillation_vs_rl"]
    assert comparison["steps"] == {"distill": 10, "student_rl": 10}
    assert comparison["heldout_accuracy"] == {"distill": accuracy["distill"], "student_rl": accuracy["student_rl"]}
    # The RL stages' held-out checks grade the whole held-out file, as the evaluate entry point does
    # (eval_prompts.split=all), so the student comparison is on one set of questions.
    for run in ("reasoning_rl", "final_rl", "student_rl"):
        checks = [row for row in rows(work / run / "metrics.jsonl") if "validation_problems" in row]
        assert checks and all(row["validation_problems"] == 16 for row in checks), run
    assert 0 <= comparison["student_rl_optimizer_updates"] <= 10
    # The RL stages log every reward, the response length and the reflection rate per step.
    reasoning = summary["curves"]["reasoning_rl"]
    for key in ("reward_think_accuracy", "reward_think_format", "reward_language_consistency", "response_length"):
        assert len(reasoning[key]) == 10, key
    assert "reward_general_preference" in summary["curves"]["final_rl"]
    assert [step for step, _ in reasoning["validation_accuracy"]] == [0, 10]
    assert "data:image/png;base64," in (work / "chain_report.html").read_text()
    assert "[chain] held-out accuracy after each stage: cold_start" in result.stdout


@pytest.mark.integration
def test_a_rerun_of_the_r1_chain_skips_finished_stages(chain):
    work, _ = chain
    again = run_chain("chain_size=ci", f"work_dir={work}", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for number, stage in enumerate(STAGES, 1):
        assert f"[chain] {number:2d}/12 {stage:<15} skipped (done:" in again.stdout, stage
    assert "running" not in again.stdout


def test_every_r1_stage_command_composes_with_its_preset(tmp_path):
    work = tmp_path / "work"
    (work / "tokenizer").mkdir(parents=True)  # tokenize checks that its tokenizer exists
    dry = run_chain("chain_size=ci", f"work_dir={work}", "dry_run=true", "overrides.distill=['optimizer.lr=1e-3']")
    assert dry.returncode == 0, dry.stderr[-3000:]
    printed = dry_run_commands(dry.stdout)
    assert list(printed) == list(STAGES)
    configs = {}
    for stage, commands in printed.items():
        for module, *overrides in commands:
            if (
                module.startswith(("megatron_recipes.", "beam_pipelines."))
                and module != "megatron_recipes.data.r1_tasks"
            ):
                configs[stage] = compose_config(module.rsplit(".", 1)[-1], overrides, register_configs)
    for run, steps in STEPS.items():
        trainer, checkpoint = configs[run].trainer, configs[run].checkpoint
        assert trainer.train_steps == checkpoint.save_interval == steps, run
        assert trainer.output_dir == str(work / run), run
    for run, start in STARTS_FROM.items():
        assert configs[run].checkpoint.init_from == str(work / start / "checkpoints"), run
    assert configs["reasoning_rl"].rl.rewards == ["think_accuracy", "think_format", "language_consistency"]
    assert configs["final_rl"].rl.rewards[-1] == "general_preference"
    assert configs["student_rl"].rl.rewards == ["think_accuracy", "think_format"]
    # One optimizer step per student GRPO step, as distillation's SFT takes.
    student_rl = configs["student_rl"]
    assert student_rl.trainer.global_batch_size == student_rl.rl.questions_per_step * student_rl.rl.group_size
    for run in ("student_pretrain", "distill", "student_rl"):
        assert configs[run].model.num_layers == 2 and configs[run].model.add_qkv_bias, run
    # Cold-start records get the R1 prompt; rejection samples and general data already hold it.
    assert "{question}" != configs["cold_start"].sft_data.question_template
    assert configs["sft"].sft_data.question_template == configs["distill"].sft_data.question_template == "{question}"
    assert printed["distill"][-1][-1] == "optimizer.lr=1e-3"
    assert configs["evaluate_distill"].prompt_style == "think"
    assert not (work / "task").exists()


def test_an_unknown_chain_or_r1_stage_is_a_one_line_error(tmp_path):
    unknown_chain = subprocess.run(
        [sys.executable, str(CHAIN), "chain=r2", f"work_dir={tmp_path}"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown_chain.returncode == 2
    assert unknown_chain.stderr.strip().splitlines()[-1].startswith("error: chain='r2'")
    unknown_stage = run_chain(f"work_dir={tmp_path}", "skip=[grpo]", timeout=120)
    assert unknown_stage.returncode == 2
    assert unknown_stage.stderr.strip() == "error: unknown stage(s) 'grpo': stages are " + ", ".join(STAGES)
