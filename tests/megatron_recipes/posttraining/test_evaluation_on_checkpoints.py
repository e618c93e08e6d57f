"""The evaluation harness on real checkpoints of these recipes (this directory's session SFT and
GRPO runs, and a base model pretrained for a few steps on megatron's mock data): the suite runner
lays out the chain's comparison table (base / SFT / GRPO x CHAMP and the held-out arithmetic set),
and an evaluation sampling at temperature 1, killed with SIGKILL half-way, resumes to the records
of an uninterrupted run."""

from __future__ import annotations

import json

import pytest

from megatron_recipes.data.config import ChatTemplateConfig
from megatron_recipes.data.rl_prompts import PromptStream, distinct_records
from tests.megatron_recipes.evaluation.test_evaluation_resume import kill_resume_and_compare
from tests.megatron_recipes.posttraining.arithmetic import prompt_config
from tests.support import run_module

pytestmark = pytest.mark.integration


def write_arithmetic_questions(path, count: int):
    """A question file in the chain's evaluation format (GSM8K JSONL). The questions are ones the
    session's SFT model trained on: these tests are about the harness on real checkpoints, and on
    them the models answer well clear of zero (on the held-out side the tiny model knows few sums,
    test_post_training_runs measures that)."""
    questions = distinct_records(PromptStream(prompt_config(seed=99), ChatTemplateConfig()).take(0, 200))[:count]
    assert len(questions) == count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"question": r.question, "answer": f"{r.question} is {r.answer}.\n#### {r.answer}"}) + "\n"
            for r in questions
        )
    )
    return path


@pytest.fixture(scope="module")
def base_checkpoints(tmp_path_factory):
    """The tiny model pretrained for 5 steps on mock tokens (a base model that knows no sums)."""
    output = tmp_path_factory.mktemp("base") / "pretrain"
    result = run_module(
        "megatron_recipes.pretrain",
        "+experiment=tiny_cpu",
        "data=mock",
        "model.vocab_size=512",
        "data.seq_length=128",
        "trainer.train_steps=5",
        "optimizer.warmup_steps=1",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=4",
        "checkpoint.save_interval=5",
        f"trainer.output_dir={output}",
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output / "checkpoints"


def test_suite_compares_base_sft_and_grpo_checkpoints(base_checkpoints, sft_run, grpo_run, tmp_path):
    work = tmp_path / "chain"  # the chain's layout: <work_dir>/{pretrain,sft,grpo}/checkpoints
    for run, checkpoints in (
        ("pretrain", base_checkpoints),
        ("sft", sft_run.checkpoints),
        ("grpo", grpo_run.checkpoints),
    ):
        (work / run).mkdir(parents=True)
        (work / run / "checkpoints").symlink_to(checkpoints, target_is_directory=True)
    write_arithmetic_questions(work / "inputs" / "benchmarks" / "arithmetic_heldout.jsonl", 32)
    output = tmp_path / "suite"
    result = run_module(
        "megatron_recipes.evaluate",
        "+experiment=chain_suite",
        f"suite.chain_dir={work}",
        "suite.benchmarks.0.limit=32",  # CHAMP's first 32 problems keep this test short
        f"generator.tokenizer={sft_run.tokenizer}",  # the mock-data base records no tokenizer
        f"output_dir={output}",
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((output / "suite.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["base", "sft", "grpo"]
    assert [column["title"] for column in table["columns"]] == ["CHAMP", "arithmetic"]
    cells = {row["name"]: row["cells"] for row in table["rows"]}
    print("suite (greedy):", json.dumps(cells))
    assert all(0.0 <= value <= 1.0 for row in cells.values() for value in row.values())
    assert cells["base"]["arithmetic"] == 0.0  # mock-token pretraining cannot answer sums
    assert cells["grpo"]["arithmetic"] > 0.0  # a broken loader or generator scores 0
    for row in table["rows"]:
        champ = row["details"]["champ"]["summary"]
        arithmetic = row["details"]["arithmetic"]["summary"]
        assert champ["problems"] == 32 and arithmetic["problems"] == 32 and arithmetic["greedy"]
        assert arithmetic["mean_response_tokens"] > 0
        records = (output / row["details"]["arithmetic"]["records"]).read_text().splitlines()
        assert len(records) == 32
    markdown = (output / "suite.md").read_text()
    assert "| model | CHAMP | arithmetic |" in markdown and "| grpo |" in markdown
    assert (output / "suite.html").read_text().count("<tr>") == 4


def test_sampled_evaluation_killed_half_way_resumes_to_the_same_records(sft_run, tmp_path):
    heldout = write_arithmetic_questions(tmp_path / "heldout.jsonl", 16)
    summary = kill_resume_and_compare(
        tmp_path,
        [
            "dataset=gsm8k",
            f"dataset.path={heldout}",
            "generator=megatron",
            f"generator.checkpoint={sft_run.checkpoints}",
            "sampling.temperature=1.0",
            "sampling.n=2",
            "sampling.max_new_tokens=16",
            "k_values=[1,2]",
        ],
        kill_at=3,
        chunks=4,
        chunk_size=4,
    )
    assert summary["problems"] == 16 and summary["temperature"] == 1.0 and not summary["greedy"]


def test_data_parallel_evaluation_writes_the_single_process_records(sft_run, tmp_path):
    """torchrun with 2 data-parallel ranks: each rank samples its own chunks (chunk c with seed
    seed + c whichever rank takes it), rank 0 merges; the records equal one process's."""
    heldout = write_arithmetic_questions(tmp_path / "heldout.jsonl", 16)
    overrides = [
        "dataset=gsm8k",
        f"dataset.path={heldout}",
        "generator=megatron",
        f"generator.checkpoint={sft_run.checkpoints}",
        "sampling.temperature=1.0",
        "sampling.n=2",
        "sampling.max_new_tokens=16",
        "harness.chunk_size=4",
    ]
    single = run_module("megatron_recipes.evaluate", *overrides, f"output_dir={tmp_path / 'one'}", OMP_NUM_THREADS="1")
    assert single.returncode == 0, single.stderr[-3000:]
    launched = run_module(
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "megatron_recipes.evaluate",
        *overrides,
        f"output_dir={tmp_path / 'two'}",
        OMP_NUM_THREADS="1",
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    parts = sorted(path.name for path in (tmp_path / "two" / "progress").glob("rank*.jsonl"))
    assert parts == ["rank0.jsonl", "rank1.jsonl"]
    by_rank = [
        [json.loads(line)["chunk"] for line in (tmp_path / "two" / "progress" / part).read_text().splitlines()]
        for part in parts
    ]
    assert sorted(set(by_rank[0])) == [0, 2] and sorted(set(by_rank[1])) == [1, 3]
    one = (tmp_path / "one" / "records.jsonl").read_text().splitlines()
    two = (tmp_path / "two" / "records.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in two] == [json.loads(line) for line in one]
