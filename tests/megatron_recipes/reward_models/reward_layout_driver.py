"""A reward model's training step and scores, and a GRPO step with a process reward model, at
several parallel layouts from the same checkpoints; writes the figures as JSON.

Run by test_reward_model_runs.py (not collected by pytest itself):
    python reward_layout_driver.py reference --work DIR --policy SFT_CKPT --prm PRM_CKPT --data LABELS
    torchrun --nproc-per-node 2 reward_layout_driver.py layouts --work DIR --policy ... --prm ... --data ...

Reward model (the PRM, trained further from its checkpoint): one optimizer step on a fixed global
batch of labelled records, then the held-out scores of the updated model; at TP=1 (one process),
TP=2, TP=2 with sequence parallelism, PP=2 and DP=2. GRPO with the PRM: the reference samples a
rollout from the SFT policy and saves the samples; every layout rescoring them with the PRM at
its own layout must find the same step scores and advantages, then the same losses over two
updates (TP=2 and DP=2 against TP=1).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.config import register_configs
from megatron_recipes.recipes.grpo import build_reference_model, plan_grpo
from megatron_recipes.recipes.reward_model import model_record, plan_reward_model
from megatron_recipes.reward_models.data import evaluation_batches
from megatron_recipes.reward_models.model import NEW_MODULES, build_reward_model, reward_forward
from megatron_recipes.reward_models.scoring import RewardModelScorer
from megatron_recipes.reward_models.trainer import RewardModelTrainer, gather_scores
from megatron_recipes.rl.rollout import RolloutSample, rollout_batch
from megatron_recipes.rl.trainer import GrpoTrainer, grpo_updates
from megatron_recipes.runtime.distributed import shutdown_runtime
from megatron_recipes.training.loop import forward_only
from megatron_recipes.training.session import setup_training
from stack_common.cli import compose_config

REWARD_LAYOUTS = {"tp2": "tp2", "tp2_sequence_parallel": "tp2_sp", "pp2": "pp2", "dp2": "single"}
GRPO_LAYOUTS = {"tp2": "tp2", "dp2": "single"}


def reward_config(prm: str, data: str, parallelism: str):
    return compose_config(
        "reward_model",
        [
            "+experiment=reward_model_tiny_cpu",
            f"parallelism={parallelism}",
            f"checkpoint.init_from={prm}",
            "checkpoint.dir=null",
            "reward_model.kind=prm",
            f"reward_model.train_paths=[{data}]",
            "reward_model.validation_fraction=0.2",
            "trainer.global_batch_size=16",
            "trainer.micro_batch_size=4",
            "trainer.tensorboard=false",
            "optimizer.warmup_steps=0",
        ],
        register_configs,
    )


def reward_step(prm: str, data: str, parallelism: str) -> dict:
    config = reward_config(prm, data, parallelism)
    plan = plan_reward_model(config)
    session = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        config.trainer,
        config.checkpoint,
        plan.vocab_size,
        model_builder=functools.partial(build_reward_model, kind="prm"),
        new_modules=NEW_MODULES,
        model_record=model_record(config.reward_model),
    )
    trainer = RewardModelTrainer(session, plan.batches, plan.validation, plan.tokenizer.eod, 0)
    record = trainer.step()
    metrics = trainer.evaluate()
    # Every held-out score, in the order of the held-out records (rows dealt over DP ranks).
    rank, ranks = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    outputs = []
    for group in evaluation_batches(plan.validation, 4, rank, ranks, plan.tokenizer.eod, trainer.multiple):
        outputs += forward_only(
            session,
            group,
            lambda b, s: (s[b["score_mask"] > 0].cpu(), b["targets"][b["score_mask"] > 0]),
            reward_forward,
        )
    scores, _ = gather_scores(outputs)
    return {
        "layout": session.runtime.layout(),
        "loss": record.values["loss"],
        "grad_norm": record.values["grad_norm"],
        "validation_loss": metrics["loss"],
        "validation_auc": metrics["auc"],
        "scores": sorted(scores),
    }


def grpo_config(policy: str, prm: str, parallelism: str, questions: str):
    return compose_config(
        "grpo",
        [
            "+experiment=grpo_tiny_cpu",
            f"parallelism={parallelism}",
            f"checkpoint.init_from={policy}",
            "checkpoint.dir=null",
            "trainer.tensorboard=false",
            "rl.eval_interval=0",
            "rl.advantage_estimator=process",
            f"rl.reward_model={prm}",
            "rl.reward_weights=[0.0]",
            "rl.max_new_tokens=40",
            "rl.updates_per_rollout=2",
            # Layouts compared through megatron's forward (the shared-prefix passes sum in another
            # order; megatron_cases.py checks them against it).
            "rl.shared_prefix_forward=false",
            "trainer.global_batch_size=64",
            "trainer.micro_batch_size=8",
            "optimizer.lr=5e-4",
            "prompts.source=gsm8k",
            f"prompts.path={questions}",
        ],
        register_configs,
    )


def grpo_trainer(policy: str, prm: str, parallelism: str, questions: str):
    config = grpo_config(policy, prm, parallelism, questions)
    plan = plan_grpo(config)
    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, plan.vocab_size
    )
    reference = build_reference_model(config, session)
    scorer = RewardModelScorer.load(
        prm, config.parallelism, session.runtime.device, session.precision, 8, plan.tokenizer
    )
    return GrpoTrainer(config, session, plan.tokenizer, reference, plan.prompts, reward_scorer=scorer)


def grpo_step(trainer, samples) -> dict:
    rl = trainer.rl
    trainer.score_samples(samples, rl.rewards, rl.reward_weights, None, use_reward_model=True)
    batch = rollout_batch(
        samples, trainer.tokenizer.eod, rl.advantage_estimator, rl.advantage_epsilon, trainer.tokenizer.decode
    )
    trainer.fill_log_probs(batch)
    results = grpo_updates(
        trainer.session,
        batch,
        trainer.settings,
        rl.temperature,
        rl.updates_per_rollout,
        trainer.outputs_per_update,
        rl.skip_zero_variance_groups,
        seed=7,
    )
    return {
        "layout": trainer.session.runtime.layout(),
        "step_scores": [[step.reward for step in sample.steps] for sample in samples],
        "advantage_sum": float(batch.advantages.abs().sum()),
        "losses": [r.loss for r in results],
        "grad_norms": [r.grad_norm for r in results],
    }


def _samples_to_json(samples) -> list[dict]:
    return [
        {
            "group": s.group,
            "question_id": s.question_id,
            "reference": s.reference,
            "prompt_ids": s.prompt_ids,
            "response_ids": s.response_ids,
            "trained": s.trained,
            "text": s.text,
        }
        for s in samples
    ]


def _samples_from_json(rows) -> list:
    return [RolloutSample(**row) for row in rows]


def reference(work: Path, policy: str, prm: str, data: str, questions: str) -> None:
    result = {"reward": reward_step(prm, data, "single")}
    shutdown_runtime()
    trainer = grpo_trainer(policy, prm, "single", questions)
    samples, _ = trainer.collect(0)
    (work / "samples.json").write_text(json.dumps(_samples_to_json(samples)))
    result["grpo"] = grpo_step(trainer, _samples_from_json(json.loads((work / "samples.json").read_text())))
    (work / "reference.json").write_text(json.dumps(result))
    shutdown_runtime()


def layouts(work: Path, policy: str, prm: str, data: str, questions: str) -> None:
    results = {"reward": {}, "grpo": {}}
    for name, parallelism in REWARD_LAYOUTS.items():
        results["reward"][name] = reward_step(prm, data, parallelism)
        dist.barrier()
        shutdown_runtime(destroy_process_group=False)
    rows = json.loads((work / "samples.json").read_text())
    for name, parallelism in GRPO_LAYOUTS.items():
        trainer = grpo_trainer(policy, prm, parallelism, questions)
        runtime = trainer.session.runtime
        mine = rows
        if runtime.data_parallel_size > 1:  # this rank's questions, as collect() would have assigned them
            mine = [row for row in rows if row["group"] // trainer.questions_per_rank == runtime.data_parallel_rank]
        result = grpo_step(trainer, _samples_from_json(mine))
        if runtime.data_parallel_size > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (result["step_scores"], result["advantage_sum"]))
            result["step_scores"] = [scores for part in gathered for scores in part[0]]
            result["advantage_sum"] = sum(part[1] for part in gathered)
        results["grpo"][name] = result
        dist.barrier()
        shutdown_runtime(destroy_process_group=False)
    if int(os.environ.get("RANK", "0")) == 0:
        (work / "layouts.json").write_text(json.dumps(results))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    mode = sys.argv[1]
    options = {key: sys.argv[sys.argv.index(f"--{key}") + 1] for key in ("work", "policy", "prm", "data", "questions")}
    {"reference": reference, "layouts": layouts}[mode](
        Path(options["work"]), options["policy"], options["prm"], options["data"], options["questions"]
    )
