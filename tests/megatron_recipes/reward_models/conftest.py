"""Fixtures of the reward-model integration tests, each made once per test session by the real
entry points: the step-chain task and a tiny policy SFT'd on it (imperfect by construction),
label_steps' outcome and Math-Shepherd labels of its solutions (ground truth added), and an ORM
and a PRM trained from it. Sizes are CI-sized; benchmarks/reward_models_step_chains.py runs the
same pipeline at the sizes of the reported figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_recipes.data.step_chains import annotate_true_labels, check_disjoint, read_questions, write_task
from tests.megatron_recipes.posttraining.arithmetic import chat_texts, train_small_tokenizer
from tests.support import run_module

SFT_STEPS = 400
REWARD_MODEL_STEPS = 150


class ChainRun:
    """Paths of the session's task, policy, labels and reward models."""

    def __init__(self, work: Path):
        self.work = work
        self.task = work / "task"
        self.tokenizer = self.task / "tokenizer"
        self.train_questions = self.task / "train_questions.jsonl"
        self.heldout_questions = self.task / "heldout_questions.jsonl"
        self.sft = work / "sft" / "checkpoints"

    def records(self, name: str) -> list[dict]:
        return [
            json.loads(line)
            for shard in sorted((self.work / name).glob("shard_*.jsonl"))
            for line in shard.read_text().splitlines()
        ]


def _run(module: str, *arguments: str):
    result = run_module(module, *arguments, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def chain_policy(tmp_path_factory) -> ChainRun:
    """The step-chain task and the tiny policy SFT'd on it (real SFT entry point)."""
    run = ChainRun(tmp_path_factory.mktemp("chain"))
    write_task(run.task, sft=8000, train=300, heldout=60, seed=0)
    sft_records = [json.loads(line) for line in (run.task / "sft.jsonl").read_text().splitlines()]
    train_small_tokenizer(run.tokenizer, chat_texts(sft_records))
    check_disjoint(
        read_questions(run.heldout_questions),
        [r["messages"][0]["content"].split("\n")[0] for r in sft_records],
        read_questions(run.train_questions),
    )
    _run(
        "megatron_recipes.sft",
        "+experiment=sft_tiny_cpu",
        f"sft_data.paths=[{run.task / 'sft.jsonl'}]",
        f"sft_data.tokenizer={run.tokenizer}",
        "sft_data.seq_length=256",
        "model.vocab_size=512",
        f"trainer.train_steps={SFT_STEPS}",
        "trainer.global_batch_size=16",
        "trainer.micro_batch_size=16",
        "optimizer.lr=3e-3",
        f"trainer.output_dir={run.work / 'sft'}",
        "checkpoint.save_interval=0",
        "trainer.log_interval=100",
        "trainer.tensorboard=false",
    )
    return run


def label(run: ChainRun, name: str, questions: Path, limit: int, samples: int, method: str, seed: int) -> dict:
    _run(
        "megatron_recipes.label_steps",
        f"policy={run.sft}",
        "device=cpu",
        "prompts.source=gsm8k",
        f"prompts.path={questions}",
        f"prompts.limit={limit}",
        f"samples_per_question={samples}",
        "sampling.max_new_tokens=48",
        f"label.method={method}",
        "label.completions=4",
        "label.completion_max_new_tokens=48",
        "questions_per_shard=50",
        f"output_dir={run.work / name}",
        f"seed={seed}",
    )
    summary = json.loads((run.work / name / "summary.json").read_text())
    summary["agreement"] = annotate_true_labels(run.work / name)
    return summary


@pytest.fixture(scope="session")
def chain_labels(chain_policy) -> dict:
    """label_steps from the SFT policy: outcome labels of 4 solutions of 150 training questions,
    Math-Shepherd labels of 4 solutions of 60 of them, and 8 solutions of 50 held-out questions."""
    run = chain_policy
    return {
        "outcome": label(run, "labels_outcome", run.train_questions, 150, 4, "outcome", 11),
        "shepherd": label(run, "labels_shepherd", run.train_questions, 60, 4, "math_shepherd", 12),
        "heldout": label(run, "labels_heldout", run.heldout_questions, 50, 8, "outcome", 13),
    }


def train_reward_model(run: ChainRun, name: str, data: str, kind: str, field: str) -> Path:
    _run(
        "megatron_recipes.reward_model",
        "+experiment=reward_model_tiny_cpu",
        f"checkpoint.init_from={run.sft}",
        f"reward_model.kind={kind}",
        f"reward_model.train_paths=[{run.work / data}]",
        f"reward_model.validation_paths=[{run.work / 'labels_heldout'}]",
        f"reward_model.step_label_field={field}",
        "reward_model.validation_step_label_field=true_step_labels",
        f"trainer.train_steps={REWARD_MODEL_STEPS}",
        "trainer.eval_interval=0",
        f"trainer.output_dir={run.work / name}",
        "checkpoint.save_interval=0",
        "trainer.tensorboard=false",
    )
    return run.work / name


@pytest.fixture(scope="session")
def chain_reward_models(chain_policy, chain_labels) -> dict:
    """An ORM on the outcome labels and a PRM on the ground-truth step labels of the same
    solutions, from the SFT policy; both validated on the held-out questions' solutions
    (ground-truth step labels for the PRM's held-out steps). The Math-Shepherd labels (240
    solutions here) are checked against the ground truth in the label_steps test; a PRM on so few
    overfits, and the benchmark trains one on its larger set."""
    run = chain_policy
    return {
        "orm": train_reward_model(run, "orm", "labels_outcome", "orm", "step_labels"),
        "prm": train_reward_model(run, "prm", "labels_outcome", "prm", "true_step_labels"),
    }
