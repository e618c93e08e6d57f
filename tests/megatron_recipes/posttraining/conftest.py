"""Fixtures of the post-training tests: a small real tokenizer, and (for the integration tests)
one SFT'd tiny checkpoint per test session, made by the real SFT entry point."""

from __future__ import annotations

import pytest

from megatron_recipes.generation.tokenizer import TextTokenizer
from tests.megatron_recipes.posttraining.arithmetic import (
    CODE_TEXTS,
    chat_texts,
    grpo_task_overrides,
    train_small_tokenizer,
    write_arithmetic_sft,
)
from tests.support import run_module


@pytest.fixture(scope="session")
def tokenizer_directory(tmp_path_factory):
    work = tmp_path_factory.mktemp("tokenizer")
    records = write_arithmetic_sft(work / "corpus.jsonl", 400)
    return train_small_tokenizer(work / "tokenizer", chat_texts(records) + CODE_TEXTS * 20)


@pytest.fixture(scope="session")
def small_tokenizer(tokenizer_directory):
    return TextTokenizer(str(tokenizer_directory))


SFT_STEPS_FIRST, SFT_STEPS = 200, 250
# Half of the SFT answers in the ungraded style: GRPO's gain on held-out questions is the graded
# style winning (at 0.3 the sampled gain over 30 steps was 5 points, 0.357 -> 0.407, too close to
# noise on 35 questions). Which style greedy decoding picks is then a coin toss per question, so the
# evaluate test asserts on what the model knows (the sum it states, in either style), not on how
# many of its greedy answers the verifier grades.
UNGRADED_STYLE = 0.5


class SftRun:
    """The session's SFT run: data, tokenizer, output directory and both invocations' output."""

    def __init__(self, work, data, tokenizer, output_dir, first, second):
        self.work, self.data, self.tokenizer, self.output_dir = work, data, tokenizer, output_dir
        self.first, self.second = first, second

    @property
    def checkpoints(self):
        return self.output_dir / "checkpoints"


def sft_overrides(data, tokenizer, output_dir, steps: int) -> list[str]:
    return [
        "+experiment=sft_tiny_cpu",
        f"sft_data.paths=[{data}]",
        f"sft_data.tokenizer={tokenizer}",
        "sft_data.seq_length=160",
        # 512 rows at every TP size (TP=1 would pad a 340-token vocabulary to 384, TP=2 to 512).
        "model.vocab_size=512",
        f"trainer.train_steps={steps}",
        "trainer.global_batch_size=16",
        "trainer.micro_batch_size=16",
        "optimizer.lr=3e-3",
        f"trainer.output_dir={output_dir}",
        "checkpoint.save_interval=100",
        "trainer.log_interval=50",
    ]


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory):
    """The tiny model SFT'd on arithmetic by the real entry point: 200 steps, then the same
    command with 250 steps resumes from the step-200 checkpoint (about a minute in all). The
    environment pins the CPU kernels (tests/conftest.py): the same model bit for bit on any machine."""
    work = tmp_path_factory.mktemp("sft_run")
    data = work / "sft.jsonl"
    records = write_arithmetic_sft(data, 3000, ungraded_style=UNGRADED_STYLE)
    tokenizer = train_small_tokenizer(work / "tokenizer", chat_texts(records))
    output_dir = work / "sft"
    first = run_module(
        "megatron_recipes.sft", *sft_overrides(data, tokenizer, output_dir, SFT_STEPS_FIRST), OMP_NUM_THREADS="1"
    )
    assert first.returncode == 0, first.stderr[-4000:]
    second = run_module(
        "megatron_recipes.sft", *sft_overrides(data, tokenizer, output_dir, SFT_STEPS), OMP_NUM_THREADS="1"
    )
    assert second.returncode == 0, second.stderr[-4000:]
    return SftRun(work, data, tokenizer, output_dir, first, second)


GRPO_STEPS = 30


class GrpoRun:
    def __init__(self, output_dir, result):
        self.output_dir, self.result = output_dir, result

    @property
    def checkpoints(self):
        return self.output_dir / "checkpoints"


def grpo_overrides(init, output_dir, steps: int) -> list[str]:
    return [
        "+experiment=grpo_tiny_cpu",
        f"checkpoint.init_from={init}",
        f"trainer.train_steps={steps}",
        f"trainer.output_dir={output_dir}",
        "checkpoint.save_interval=0",
        "rl.eval_interval=10",
        "rl.eval_temperature=1.0",
        "rl.eval_samples=4",
        *grpo_task_overrides(),
    ]


@pytest.fixture(scope="session")
def grpo_run(sft_run, tmp_path_factory):
    """GRPO from the session's SFT checkpoint by the real entry point (about half a minute)."""
    output_dir = tmp_path_factory.mktemp("grpo_run") / "grpo"
    result = run_module(
        "megatron_recipes.grpo", *grpo_overrides(sft_run.checkpoints, output_dir, GRPO_STEPS), OMP_NUM_THREADS="1"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return GrpoRun(output_dir, result)
