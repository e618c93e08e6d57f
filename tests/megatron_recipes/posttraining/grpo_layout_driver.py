"""GRPO updates on one rollout batch at several layouts; writes losses as JSON.

Run by test_post_training_runs.py (not collected by pytest itself):
    python grpo_layout_driver.py reference --work DIR --init SFT_CHECKPOINTS
    torchrun --nproc-per-node 2 grpo_layout_driver.py layouts --work DIR --init SFT_CHECKPOINTS

The reference (TP=1, one process) samples a rollout batch from the SFT'd policy, saves it, then
computes pi_old / pi_ref and runs two optimizer updates on it (the second with ratios != 1),
recording loss, KL, clip fraction and grad norm per update, plus greedy generations. The
2-process launch loads the same batch and the same starting weights and does the same at TP=2
(each rank holding half of every layer) and at DP=2 (each rank half of the questions).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_recipes.config import register_configs
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.recipes.grpo import build_reference_model, plan_grpo
from megatron_recipes.rl.rollout import RolloutBatch
from megatron_recipes.rl.trainer import GrpoTrainer, grpo_updates
from megatron_recipes.runtime.distributed import shutdown_runtime
from megatron_recipes.training.session import setup_training
from stack_common.cli import compose_config

GREEDY_PROMPTS = [
    "User: Calculate 3 + 4.\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:",
    "User: Calculate 9 + 8.\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:",
    "User: What is",
]


def compose(init: str, parallelism: str):
    return compose_config(
        "grpo",
        [
            "+experiment=grpo_tiny_cpu",
            f"parallelism={parallelism}",
            f"checkpoint.init_from={init}",
            "checkpoint.dir=null",
            "trainer.tensorboard=false",
            "rl.eval_interval=0",
            "rl.updates_per_rollout=2",
            "trainer.global_batch_size=64",
            "trainer.micro_batch_size=8",
            "optimizer.lr=5e-4",
            "rl.epsilon_high=0.1",
        ],
        register_configs,
    )


def build(config):
    plan = plan_grpo(config)
    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, plan.vocab_size
    )
    reference = build_reference_model(config, session)
    return GrpoTrainer(config, session, plan.tokenizer, reference, plan.prompts), plan


def updates(trainer, batch) -> dict:
    trainer.fill_log_probs(batch)
    results = grpo_updates(
        trainer.session,
        batch,
        trainer.settings,
        trainer.rl.temperature,
        trainer.rl.updates_per_rollout,
        trainer.outputs_per_update,
        trainer.rl.skip_zero_variance_groups,
        seed=7,
    )
    greedy = trainer.generator.generate(GREEDY_PROMPTS, SamplingParams(0.0, max_new_tokens=12))
    return {
        "layout": trainer.session.runtime.layout(),
        "losses": [r.loss for r in results],
        "grad_norms": [r.grad_norm for r in results],
        "kl": [r.metrics.get("kl") for r in results],
        "clip_fraction": [r.metrics.get("clip_fraction") for r in results],
        "tokens": [r.tokens for r in results],
        "greedy": [g[0].token_ids for g in greedy],
    }


def reference(work: Path, init: str) -> None:
    trainer, _ = build(compose(init, "single"))
    samples, batch = trainer.collect(0)
    torch.save(batch.state(), work / "rollout.pt")
    result = updates(trainer, batch)
    result["rewards"] = [s.reward for s in samples]
    result["zero_variance_outputs"] = int(batch.zero_variance.sum())
    (work / "reference.json").write_text(json.dumps(result))
    shutdown_runtime()


def layouts(work: Path, init: str) -> None:
    state = torch.load(work / "rollout.pt")
    results = {}
    for name, parallelism in (("tp2", "tp2"), ("dp2", "single")):
        trainer, _ = build(compose(init, parallelism))
        batch = RolloutBatch.from_state(dict(state))
        runtime = trainer.session.runtime
        if runtime.data_parallel_size > 1:  # this rank's questions, as collect() would have assigned them
            per_rank = trainer.questions_per_rank
            rows = (batch.group // per_rank) == runtime.data_parallel_rank
            batch = RolloutBatch(
                **{key: value[rows] if value is not None else None for key, value in batch.state().items()}
            )
        results[name] = updates(trainer, batch)
        dist.barrier()
        shutdown_runtime(destroy_process_group=False)
    if int(os.environ.get("RANK", "0")) == 0:
        (work / "layouts.json").write_text(json.dumps(results))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    mode = sys.argv[1]
    work, init = Path(sys.argv[sys.argv.index("--work") + 1]), sys.argv[sys.argv.index("--init") + 1]
    {"reference": reference, "layouts": layouts}[mode](work, init)
