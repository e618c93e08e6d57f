"""The whole DeepSeekMath chain on one machine, from the sample crawl to an evaluated GRPO model.

    python launch/local/chain.py                                  # the embedded default (< 20 min, 2 cores)
    python launch/local/chain.py chain_size=ci work_dir=/tmp/c    # the test's reduced sizes
    python launch/local/chain.py force=[pretrain]                 # redo pretrain and everything after it
    python launch/local/chain.py "overrides.sft=['optimizer.lr=2e-3']"   # extra Hydra overrides for one stage
    python launch/local/chain.py dry_run=true                     # print every stage's command, run nothing

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
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from hydra.core.config_store import ConfigStore

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stack_common.checks import require_positive  # noqa: E402
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


@dataclass
class ChainConfig:
    chain_size: ChainSizeConfig = field(default_factory=ChainSizeConfig)
    work_dir: str = "outputs/chain"
    # Beam preset of the corpus stages. One worker: on a 2-core machine and a sample this small,
    # worker start-up costs more than a second process gains (benchmarks/prepare_throughput.py).
    beam: str = "direct_single"
    skip: list[str] = field(default_factory=list)
    force: list[str] = field(default_factory=list)
    from_stage: str = ""
    # Extra Hydra overrides per stage, appended last: {sft: ["optimizer.lr=2e-3"], ...}.
    overrides: dict[str, list[str]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    # Echo every line of every stage (default: progress lines only; the logs hold everything).
    verbose: bool = False
    # Print every stage's commands (as a shell script) and stop: no stage runs, work_dir is untouched.
    dry_run: bool = False

    def validate(self) -> None:
        unknown = [
            s
            for s in [*self.skip, *self.force, *self.overrides, *([self.from_stage] if self.from_stage else [])]
            if s not in STAGES
        ]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(map(repr, unknown))}: stages are {', '.join(STAGES)}")
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

    sys.exit(Chain(config, STAGES).run())


if __name__ == "__main__":
    hydra_entry_point("chain", register_chain_configs)(main)()
