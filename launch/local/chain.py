"""The whole DeepSeekMath chain on one machine, from the sample crawl to an evaluated GRPO model.

    python launch/local/chain.py                                  # the embedded default (< 20 min, 2 cores)
    python launch/local/chain.py chain_size=ci work_dir=/tmp/c    # the test's reduced sizes
    python launch/local/chain.py force=[pretrain]                 # redo pretrain and everything after it
    python launch/local/chain.py "overrides.sft=['optimizer.lr=2e-3']"   # extra Hydra overrides for one stage
    python launch/local/chain.py dry_run=true                     # print every stage's command, run nothing
    python launch/local/chain.py chain=r1                         # DeepSeek-R1's stages instead (below)
    python launch/local/chain.py beam_preset=dask "beam_overrides=['beam.dask_scheduler_file=/tmp/dask/scheduler.json']"

Every stage is a real subprocess, `python -m <entry point> <Hydra overrides>`: the same commands a
cluster user runs (the README's "The chain at real scale" lists them with the 7B presets). A stage's
settings are its preset under conf/ (`+experiment=chain_<stage>`); this file adds only paths and the
sizes of `chain_size` (conf/chain_size/). In order:

  prepare          beam_pipelines.prepare        sample WARC -> pool/
  dedup            beam_pipelines.dedup          pool/ -> pool_near_dedup/ (MinHash LSH)
  recall           beam_pipelines.recall         pool_near_dedup/ -> recall/final/ (fastText rounds, unattended review)
  decontaminate    beam_pipelines.decontaminate  recall/final/ -> corpus/ (10-gram rule vs CHAMP + the held-out set)
  train_tokenizer  beam_pipelines.train_tokenizer corpus/ -> tokenizer/ (byte-level BPE)
  tokenize         beam_pipelines.tokenize       corpus/ and arithmetic text -> tokenized/<source>.bin/.idx
  pretrain         megatron_recipes.pretrain     the tiny model on the mixture (math corpus + arithmetic text)
  sft              megatron_recipes.sft          arithmetic chat data from reasoning-gym, from the pretrained model
  evaluate_sft     megatron_recipes.evaluate     held-out arithmetic (GSM8K format), greedy, the SFT checkpoint
  grpo             megatron_recipes.grpo         GRPO with the answer checker's reward, from the SFT model
  evaluate_grpo    megatron_recipes.evaluate     the same held-out set, the GRPO checkpoint

Near-duplicate removal runs before the recall rounds (DeepSeekMath deduplicated its Common Crawl
pool first, and a classifier trained and scored on duplicates counts them twice); decontamination
runs on the final selection, last before tokenization, so nothing downstream sees a benchmark item.

Resume: each stage has a completion marker written last by its entry point (summary.json,
results.json, a training run's exit_status.json with reason "finished"); a rerun skips finished
stages. `force=[stage]` (or `from_stage=stage`) deletes that stage's outputs and reruns it and every
stage after it, whose inputs it changes. A failing stage stops the chain with one line naming the
stage and its log (`<work_dir>/logs/<NN>_<stage>.log`); the exit code is 1.
At the end: `<work_dir>/chain_summary.json` and `<work_dir>/chain_report.html` (plots).

`chain=r1`: DeepSeek-R1's pipeline on the R1 CPU task (launch/local/r1_chain_runner.py): task ->
tokenize -> pretrain -> cold_start -> reasoning_rl -> rejection_sample -> sft -> final_rl, then
student_pretrain -> distill -> evaluate_distill -> student_rl; sizes from the `r1_*` fields of
chain_size; the same markers, resume, force/skip, logs, dry run, summary and report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from hydra.core.config_store import ConfigStore

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stack_common.checks import require_choice, require_positive  # noqa: E402
from stack_common.cli import hydra_entry_point  # noqa: E402
from stack_common.errors import ConfigError  # noqa: E402

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
# chain=r1: DeepSeek-R1's stages (launch/local/r1_chain_runner.py).
R1_STAGES = (
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
CHAIN_STAGES = {"deepseekmath": STAGES, "r1": R1_STAGES}


@dataclass
class ChainSizeConfig:
    """How big each stage is. `default`: the README's main command; `ci`: the chain test."""

    name: str = "default"
    sample_math_pages: int = 400
    sample_other_pages: int = 400
    seed_positive_pages: int = 150
    recall_max_rounds: int = 4
    tokenizer_vocab_size: int = 2048
    arithmetic_documents: int = 4000
    pretrain_steps: int = 150
    sft_examples: int = 3000
    sft_steps: int = 250
    grpo_steps: int = 40
    eval_questions: int = 64
    # chain=r1: the R1 task's files (megatron_recipes/data/r1_tasks.py) and its stages.
    r1_pretrain_documents: int = 6000
    r1_train_prompts: int = 2000
    r1_heldout_questions: int = 64
    r1_cold_start_chains: int = 400
    r1_tokenizer_vocab_size: int = 512
    # 800, not 300: the 300-step base copies no numbers from the question (held-out accuracy after
    # cold start 0.115, 111 of 2,048 rejection samples kept; 800 steps: 0.234, 234 kept), and a
    # 1,200-step base answers 25% of held-out sums, the 300-step one 8%
    # (benchmarks/results/r1_chain_default.json, r1_zero_learning*.json).
    r1_pretrain_steps: int = 800
    r1_cold_start_steps: int = 100
    r1_rl_steps: int = 30
    r1_rejection_prompts: int = 256
    r1_sft_steps: int = 100
    r1_final_rl_steps: int = 20
    r1_student_pretrain_steps: int = 500
    # The student's budget: distillation's SFT steps and GRPO's steps on the student (equal).
    r1_student_steps: int = 40
    # Every generation of the R1 stages (RL rollouts, held-out checks, rejection samples, evaluation).
    r1_max_new_tokens: int = 96
    # Questions per RL step (8 samples each).
    r1_rollout_questions: int = 8


@dataclass
class ChainConfig:
    # Which chain: deepseekmath (the stages above) or r1 (DeepSeek-R1's stages on the R1 task).
    chain: str = "deepseekmath"
    chain_size: ChainSizeConfig = field(default_factory=ChainSizeConfig)
    work_dir: str = "outputs/chain"
    # Beam preset of the corpus stages. One worker: on a 2-core machine and a sample this small,
    # worker start-up costs more than a second process gains (benchmarks/prepare_throughput.py).
    # (Not named `beam`: Hydra would read `beam=...` as the corpus entry points' config group.)
    beam_preset: str = "direct_single"
    # Extra `beam.*` overrides for every corpus command, e.g. with beam_preset=dask:
    # "beam_overrides=['beam.dask_scheduler_file=/shared/scheduler.json']"
    beam_overrides: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    force: list[str] = field(default_factory=list)
    from_stage: str = ""
    # Extra Hydra overrides per stage, appended last: {sft: ["optimizer.lr=2e-3"], ...}.
    overrides: dict[str, list[str]] = field(
        default_factory=lambda: {stage: [] for stage in dict.fromkeys([*STAGES, *R1_STAGES])}
    )
    # Echo every line of every stage (default: progress lines only; the logs hold everything).
    verbose: bool = False
    # Print every stage's commands (as a shell script) and stop: no stage runs, work_dir is untouched.
    dry_run: bool = False

    def validate(self) -> None:
        require_choice("chain", self.chain, tuple(CHAIN_STAGES))
        stages = CHAIN_STAGES[self.chain]
        # `overrides` lists every stage of both chains (empty) by default: only a non-empty entry names one.
        named = [stage for stage, extra in self.overrides.items() if extra]
        unknown = [
            s
            for s in [*self.skip, *self.force, *named, *([self.from_stage] if self.from_stage else [])]
            if s not in stages
        ]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(map(repr, unknown))}: stages are {', '.join(stages)}")
        for override in self.beam_overrides:
            if not override.startswith("beam.") or "=" not in override:
                raise ConfigError(f"beam_overrides entry {override!r} must look like beam.KEY=VALUE")
        size = self.chain_size
        for item in fields(size):
            if item.type == "int":
                require_positive(f"chain_size.{item.name}", getattr(size, item.name))
        if size.grpo_steps < 10:
            raise ConfigError("chain_size.grpo_steps must be >= 10 (held-out accuracy is measured every 10 steps)")


def register_chain_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="chain_schema", node=ChainConfig)
    store.store(group="chain_size", name="chain_size_schema", node=ChainSizeConfig)


def main(config: ChainConfig) -> None:
    config.validate()
    from launch.local.chain_runner import Chain  # noqa: PLC0415  Beam, torch: after the config checks
    from launch.local.r1_chain_runner import R1Chain  # noqa: PLC0415  the same, for chain=r1

    runner = R1Chain if config.chain == "r1" else Chain
    sys.exit(runner(config, CHAIN_STAGES[config.chain]).run())


if __name__ == "__main__":
    hydra_entry_point("chain", register_chain_configs)(main)()
