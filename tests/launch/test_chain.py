"""The main job end to end (launch/local/chain.py) at the reduced `ci` sizes: every stage runs
for real as a subprocess, and each stage's output is what the next stage read (counts, token
totals, checkpoints). Then a rerun skips every finished stage, and a failing stage stops the
chain with its name and log."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_recipes.config import register_configs
from megatron_recipes.training.checkpointing import read_checkpoint_info
from megatron_recipes.training.metrics import read_metrics
from stack_common.cli import compose_config
from tests.support import REPO_ROOT, subprocess_env

CHAIN = REPO_ROOT / "launch" / "local" / "chain.py"
STAGES = (
    "prepare",
    "dedup",
    "recall",
    "decontaminate",
    "train_tokenizer",
    "tokenize",
    "pretrain",
    "sft",
    "evaluate_sft",
    "grpo",
    "evaluate_grpo",
)


def run_chain(*overrides: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHAIN), *overrides],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("chain") / "work"
    result = run_chain("chain_size=ci", f"work_dir={work}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def dry_run_commands(stdout: str) -> dict[str, list[list[str]]]:
    """The commands of a dry run's shell script, by stage (stages a run would skip included)."""
    commands: dict[str, list[list[str]]] = {}
    stage = ""
    for line in stdout.splitlines():
        if line.startswith("# ") and "/11 " in line:  # "#  3/11 recall" or "# 10/11 grpo (skipped: ...)"
            stage = line.split("/11 ", 1)[1].split()[0]
            commands[stage] = []
        elif stage and line.strip():
            words = shlex.split(line.removeprefix("# "))
            assert words[:2] == [sys.executable, "-m"], line
            commands[stage].append(words[2:])
    return commands


@pytest.mark.integration
def test_every_stage_hands_its_output_to_the_next(chain):
    work, result = chain
    for number, stage in enumerate(STAGES, 1):
        assert f"[chain] {number:2d}/11 {stage:<15} done in" in result.stdout, stage
        assert (work / "logs" / f"{number:02d}_{stage}.log").stat().st_size > 0

    # Corpus: each pipeline's input count is the previous one's kept count, and each run balances.
    pool, dedup = read(work / "pool" / "summary.json"), read(work / "pool_near_dedup" / "summary.json")
    final, corpus = read(work / "recall" / "final" / "summary.json"), read(work / "corpus" / "summary.json")
    for summary in (pool, dedup, final, corpus):
        assert summary["balanced"], summary["totals"]
    assert pool["totals"]["kept"] > 100
    assert dedup["totals"]["in"] == pool["totals"]["kept"]
    assert final["totals"]["in"] == dedup["totals"]["kept"]
    assert 0 < final["totals"]["kept"] < final["totals"]["in"]
    assert len(final["rounds"]) == 2 and final["stop_reason"] in ("max_rounds", "overlap")
    assert corpus["totals"]["in"] == final["totals"]["kept"]
    assert (work / "recall" / "report.html").exists()

    # Tokenization: one indexed document per decontaminated document; the token total in the
    # summary is what megatron-core's IndexedDataset reads back.

    tokens = read(work / "tokenized" / "math_corpus" / "summary.json")["dataset"]
    dataset = IndexedDataset(str(work / "tokenized" / "math_corpus"))
    assert len(dataset) == tokens["documents"] == corpus["totals"]["kept"]
    assert int(np.sum(dataset.sequence_lengths)) == tokens["tokens"]
    arithmetic = read(work / "tokenized" / "arithmetic" / "summary.json")["dataset"]
    assert arithmetic["documents"] == len((work / "inputs" / "arithmetic_text.jsonl").read_text().splitlines())

    # Training: each run finished its steps and started from the previous stage's checkpoint.

    for run, steps in (("pretrain", 30), ("sft", 120), ("grpo", 10)):
        status = read(work / run / "checkpoints" / "exit_status.json")
        assert status["reason"] == "finished" and status["iteration"] == steps, (run, status)
        info = read_checkpoint_info(work / run / "checkpoints" / f"iter_{steps:07d}")
        # Every checkpoint records the tokenizer the chain trained (pretrain included).
        assert Path(info["train_state"]["extra"]["tokenizer"]).resolve().parent == (work / "tokenizer").resolve(), run
    sft_log = (work / "logs" / "08_sft.log").read_text()
    assert f"initialised model weights from {work / 'pretrain' / 'checkpoints' / 'iter_0000030'}" in sft_log
    grpo_log = (work / "logs" / "10_grpo.log").read_text()
    assert f"initialised model weights from {work / 'sft' / 'checkpoints' / 'iter_0000120'}" in grpo_log
    pretrain_log = (work / "logs" / "07_pretrain.log").read_text()
    assert "arithmetic" in pretrain_log and "math_corpus" in pretrain_log  # the mixture's two sources

    # Evaluation of both checkpoints on the same held-out set, greedy and sampled; GRPO's own
    # held-out check is that set too. The summary carries the curves and the accuracies.
    held_out_rows = [json.loads(line) for line in (work / "inputs" / "benchmarks" / "arithmetic_heldout.jsonl").open()]
    for run in ("sft", "grpo"):
        greedy = read(work / "evaluate" / run / "greedy" / "results.json")["summary"]
        sampled = read(work / "evaluate" / run / "sampled" / "results.json")["summary"]
        assert greedy["problems"] == sampled["problems"] == len(held_out_rows) == 32
        assert (greedy["samples_per_problem"], sampled["samples_per_problem"]) == (1, 4)
    grpo_rows = read_metrics(work / "grpo" / "metrics.jsonl")
    assert grpo_rows[0]["validation_problems"] == 32 * 4
    summary = read(work / "chain_summary.json")
    assert summary["pages"]["after_decontamination"] == corpus["totals"]["kept"]
    assert summary["tokens"]["math_corpus"] == tokens["tokens"]
    evaluation = summary["evaluation_accuracy"]
    assert set(evaluation) == {"after_sft", "after_grpo"}
    assert all(set(values) == {"greedy", "sampled"} for values in evaluation.values())
    assert (
        evaluation["after_grpo"]["sampled"]
        == read(work / "evaluate" / "grpo" / "sampled" / "results.json")["summary"]["accuracy"]
    )
    assert [step for step, _ in summary["curves"]["grpo_heldout_accuracy"]] == [0, 10]
    assert len(summary["curves"]["pretrain"]) >= 3 and len(summary["curves"]["grpo"]) >= 2
    report = (work / "chain_report.html").read_text()
    assert "data:image/png;base64," in report and "<th>greedy</th>" in report and "{'after_sft'" not in report

    # The held-out set was checked in code against every training set the chain generated; none of
    # its questions is one of them (the split rule), which the generated files confirm.
    check = summary["held_out"]
    assert check["questions"] == 32 and check["overlaps_dropped"]["total"] == 0
    assert check["training_questions"] == {"pretraining_text": 1000, "sft": 1500, "grpo_prompts": 10 * 8}
    held_out = {row["question"] for row in held_out_rows}
    sft_questions = {
        json.loads(line)["messages"][0]["content"].split("\n")[0]
        for line in (work / "inputs" / "sft-1500.jsonl").open()
    }
    text_questions = {
        json.loads(line)["text"].split(".")[0] + "." for line in (work / "inputs" / "arithmetic_text.jsonl").open()
    }
    assert len(sft_questions) > 1000 and len(text_questions) > 700
    assert not held_out & sft_questions and not held_out & text_questions


@pytest.mark.integration
def test_a_rerun_skips_finished_stages(chain):
    work, _ = chain
    again = run_chain("chain_size=ci", f"work_dir={work}", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for number, stage in enumerate(STAGES, 1):
        assert f"[chain] {number:2d}/11 {stage:<15} skipped (done:" in again.stdout, stage
    assert "running" not in again.stdout


@pytest.mark.integration
def test_a_failing_stage_stops_the_chain_with_its_name_and_log(chain):
    work, _ = chain
    # force reruns the last stage only; the bad override makes its entry point refuse the config.
    failed = run_chain(
        "chain_size=ci",
        f"work_dir={work}",
        "force=[evaluate_grpo]",
        "overrides.evaluate_grpo=['sampling.temperature=-1']",
        timeout=300,
    )
    assert failed.returncode == 1
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("[chain] error: stage evaluate_grpo failed (exit 2)")
    assert str(work / "logs" / "11_evaluate_grpo.log") in error
    # Forced: its old output is gone. The override goes on the stage's last command (the sampled
    # evaluation); the greedy one ran before it.
    assert not (work / "evaluate" / "grpo" / "sampled").exists()
    assert "10/11 grpo            skipped (done:" in failed.stdout


@pytest.mark.integration
def test_a_dry_run_prints_the_commands_the_run_ran(chain):
    work, _ = chain
    # from_stage=prepare: a run would redo every stage; a dry run only prints their commands.
    dry = run_chain("chain_size=ci", f"work_dir={work}", "from_stage=prepare", "dry_run=true", timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    printed = dry_run_commands(dry.stdout)
    assert list(printed) == list(STAGES)
    for number, stage in enumerate(STAGES, 1):
        log = (work / "logs" / f"{number:02d}_{stage}.log").read_text().splitlines()
        ran = [line[2:].split()[2:] for line in log if line.startswith("$ ")]
        assert ran[: len(printed[stage])] == printed[stage], stage
    assert (work / "pool" / "summary.json").exists() and (work / "grpo" / "checkpoints").is_dir()


def test_a_dry_run_prints_every_stage_and_writes_nothing(tmp_path):
    work = tmp_path / "work"
    dry = run_chain(
        "chain_size=ci", f"work_dir={work}", "dry_run=true", "skip=[dedup]", "overrides.sft=['optimizer.lr=2e-3']"
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    printed = dry_run_commands(dry.stdout)
    assert list(printed) == list(STAGES)
    assert [len(commands) for commands in printed.values()] == [1, 1, 1, 1, 1, 2, 1, 2, 2, 1, 2]
    assert "#  2/11 dedup (skipped: skip=)" in dry.stdout.splitlines()
    # Every stage's settings come from its preset; the user's overrides go last on its last command.
    assert printed["sft"][0][0] == "megatron_recipes.data.rl_prompts"
    assert printed["sft"][1][:2] == ["megatron_recipes.sft", "+experiment=chain_sft"]
    assert printed["sft"][1][-1] == "optimizer.lr=2e-3"
    assert printed["grpo"][0][:2] == ["megatron_recipes.grpo", "+experiment=chain_grpo"]
    assert "trainer.train_steps=30" in printed["pretrain"][0]
    assert not work.exists()


def test_every_stage_command_composes_with_its_preset(tmp_path):
    work = tmp_path / "work"
    (work / "tokenizer").mkdir(parents=True)  # tokenize checks that its tokenizer exists
    dry = run_chain("chain_size=ci", f"work_dir={work}", "dry_run=true")
    assert dry.returncode == 0, dry.stderr[-3000:]
    configs = {}
    for stage, commands in dry_run_commands(dry.stdout).items():
        for module, *overrides in commands:
            if module != "megatron_recipes.data.rl_prompts":
                configs[stage] = compose_config(module.rsplit(".", 1)[-1], overrides, register_configs)
    assert configs["recall"].fasttext.dim == 64 and configs["recall"].max_rounds == 2
    assert configs["tokenize"].source.name == "arithmetic" and configs["tokenize"].source.format == "jsonl"
    pretrain = configs["pretrain"]
    assert pretrain.data.weights == {"math_corpus": 0.7, "arithmetic": 0.3}
    assert pretrain.data.sources["arithmetic"] == [f"{work}/tokenized/arithmetic"]
    for stage, steps in (("pretrain", 30), ("sft", 120), ("grpo", 10)):
        trainer, checkpoint = configs[stage].trainer, configs[stage].checkpoint
        assert trainer.train_steps == checkpoint.save_interval == steps, stage
        assert trainer.output_dir == str(work / stage), stage
    assert configs["sft"].checkpoint.init_from == str(work / "pretrain" / "checkpoints")
    assert configs["grpo"].checkpoint.init_from == str(work / "sft" / "checkpoints")
    assert configs["evaluate_grpo"].dataset.name == "gsm8k" and configs["evaluate_grpo"].generator.name == "megatron"
    # configs[stage] is the stage's last command: the sampled evaluation, at GRPO's rollout temperature.
    assert (configs["evaluate_grpo"].sampling.temperature, configs["evaluate_grpo"].sampling.n) == (1.0, 4)
    held_out = str(work / "inputs" / "benchmarks" / "arithmetic_heldout.jsonl")
    assert configs["evaluate_grpo"].dataset.path == held_out
    eval_prompts = configs["grpo"].eval_prompts  # GRPO's held-out check is the chain's checked set
    assert (eval_prompts.source, eval_prompts.path, eval_prompts.split) == ("gsm8k", held_out, "all")


def test_unknown_stage_names_are_one_line_errors(tmp_path):
    result = run_chain(f"work_dir={tmp_path}", "skip=[pretrian]", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown stage(s) 'pretrian': stages are " + ", ".join(STAGES)
    assert not (tmp_path / "logs").exists()
