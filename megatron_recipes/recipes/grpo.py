"""The body of `python -m megatron_recipes.grpo` (see that module for how to run it): plan the run
(check data, tokenizer and checkpoints before any process group), then set up, train and tear
down."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from megatron_recipes.config import GrpoConfig
from megatron_recipes.data.model_tokenizer import training_tokenizer_path
from megatron_recipes.data.rl_prompts import PromptStream, distinct_records, drop_overlapping
from megatron_recipes.generation.tokenizer import load_text_tokenizer
from megatron_recipes.models.llama import build_model
from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.scoring import RewardModelScorer, read_reward_model_record
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool
from megatron_recipes.rl.critic import build_critic
from megatron_recipes.rl.trainer import GrpoTrainer
from megatron_recipes.runtime.distributed import resolve_device, shutdown_runtime
from megatron_recipes.runtime.seeds import capture_rng_state, restore_rng_state
from megatron_recipes.sandbox import SandboxPool
from megatron_recipes.training.checkpointing import (
    CheckpointError,
    latest_iteration,
    load_model_weights,
    read_checkpoint_info,
)
from megatron_recipes.training.session import setup_training
from stack_common.errors import ConfigError

log = logging.getLogger("grpo")


@dataclass
class GrpoPlan:
    tokenizer: object
    vocab_size: int
    prompts: object
    # The held-out questions (rl_prompts.PromptRecord), none of them a question GRPO trains on.
    held_out: list | None
    # How many held-out questions the overlap check removed, per training set and in total.
    held_out_overlaps: dict | None = None
    reward_model: dict | None = None  # the reward model's record (reward_models/scoring.py)


def _recorded(path: str | None) -> dict:
    if not path:
        return {}
    try:
        return read_checkpoint_info(path)
    except (CheckpointError, FileNotFoundError) as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None


def plan_grpo(config: GrpoConfig) -> GrpoPlan:
    """Tokenizer, vocabulary, prompt streams and the starting checkpoint, checked before any process group."""
    resolve_device(config.trainer.device)
    resuming = bool(
        config.checkpoint.dir and config.checkpoint.resume and latest_iteration(config.checkpoint.dir) is not None
    )
    start = _recorded(config.checkpoint.dir) if resuming else _recorded(config.checkpoint.init_from)
    if not start and config.rl.kl_coefficient and not resuming:
        log.warning(
            "no checkpoint.init_from: GRPO starts from random weights (the reference model is that random model)"
        )
    recorded_model = dict(start.get("model_config") or {})
    for name in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size"):
        if name in recorded_model and recorded_model[name] != getattr(config.model, name):
            raise ConfigError(
                f"model.{name}={getattr(config.model, name)} but the starting checkpoint has {recorded_model[name]}: "
                "pick its model preset"
            )
    recorded_tokenizer = (start.get("train_state", {}).get("extra", {}) or {}).get("tokenizer", "")
    if config.tokenizer or recorded_tokenizer:
        tokenizer_path = config.tokenizer or recorded_tokenizer
    else:  # the tokenizer follows the model: the HF checkpoint's own, when starting from one
        tokenizer_path, _ = training_tokenizer_path("", config.model.init_from_hf, None)
    tokenizer = load_text_tokenizer(tokenizer_path)
    vocab_size = config.model.vocab_size or recorded_model.get("vocab_size") or tokenizer.vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but the model's vocabulary is "
            f"{vocab_size}"
        )
    prompts = PromptStream(config.prompts, config.chat_template)
    reward_model = check_reward_model(config, tokenizer) if config.rl.reward_model else None
    if not config.rl.eval_interval:
        return GrpoPlan(tokenizer, int(vocab_size), prompts, None, None, reward_model)
    held_out, overlaps = held_out_questions(config, prompts)
    return GrpoPlan(tokenizer, int(vocab_size), prompts, held_out, overlaps, reward_model)


def check_reward_model(config: GrpoConfig, tokenizer) -> dict:
    """The reward model's record, checked against the run: its kind fits the advantage
    estimator (an ORM for outcome supervision and PPO, a PRM for process supervision) and it
    reads the policy's tokens (the same vocabulary)."""
    record = read_reward_model_record(config.rl.reward_model)
    per_step = get_reward_model_kind(record["kind"]).per_step
    if per_step != (config.rl.advantage_estimator == "process"):
        wanted = "a process reward model (prm)" if not per_step else "an outcome reward model (orm)"
        raise ConfigError(
            f"rl.reward_model={config.rl.reward_model} is a {record['kind']} but"
            f" rl.advantage_estimator={config.rl.advantage_estimator} needs {wanted}"
        )
    if record["tokenizer"] and load_text_tokenizer(record["tokenizer"]).tokenizer.get_vocab() != (
        tokenizer.tokenizer.get_vocab()
    ):
        raise ConfigError(
            f"rl.reward_model={config.rl.reward_model} was trained with the tokenizer {record['tokenizer']},"
            f" not the policy's {tokenizer.path}: train the reward model from the policy's tokens"
        )
    return record


def held_out_questions(config: GrpoConfig, prompts) -> tuple[list, dict]:
    """eval_prompts' distinct questions less any that GRPO trains on: the first train_steps x
    questions_per_step questions of `prompts` (a resumed run draws the same ones). The split rule
    makes the overlap empty when both sources are one generator's two sides; another source (a
    file, split=all, another held_out_fraction) may overlap, and is cut back here, with a count."""
    candidates = PromptStream(config.eval_prompts, config.chat_template)
    candidates = distinct_records(candidates.take(0, len(candidates)))
    trained = prompts.take(0, config.trainer.train_steps * config.rl.questions_per_step)
    held_out, overlaps = drop_overlapping(candidates, {"grpo_prompts": [record.question for record in trained]})
    if overlaps["total"]:
        log.warning(
            "eval_prompts: %d of %d held-out questions are also GRPO training questions; they are left out",
            overlaps["total"],
            len(candidates),
        )
    if not held_out:
        raise ConfigError(
            f"eval_prompts: all {len(candidates)} held-out questions are GRPO training questions"
            " (give eval_prompts.split=held_out, or a source GRPO does not train on)"
        )
    return held_out, overlaps


def build_reference_model(config: GrpoConfig, session):
    """The frozen reference: the checkpoint recorded by a resumed iterative run, else
    checkpoint.init_from, else a copy of the (random) starting policy. None without a KL term.
    Building it must not move the random generators a resumed run restored."""
    if not config.rl.kl_coefficient:
        return None
    rng = capture_rng_state()
    chunks = build_model(
        config.model, config.parallelism, session.vocab_size, device=session.runtime.device, precision=session.precision
    )
    restore_rng_state(rng)
    for chunk in chunks:
        chunk.requires_grad_(False)
        chunk.eval()
    extra = session.state.extra
    source = extra.get("reference_checkpoint") or config.checkpoint.init_from
    if source:
        load_model_weights(source, chunks)
    else:
        for reference_chunk, policy_chunk in zip(chunks, session.unwrapped_model()):
            reference_chunk.load_state_dict(policy_chunk.state_dict(), strict=False)
        extra.setdefault("reference_iteration", session.state.iteration)
        extra["reference_saved"] = False
    if session.runtime.is_logging_rank:
        log.info("reference model: %s", source or "a copy of the starting policy")
    return chunks


def run_grpo(config: GrpoConfig, plan: GrpoPlan):
    """Set up, train, tear down; returns the TrainOutcome."""
    updates_per_step = config.rl.updates_per_rollout * (config.rollout_outputs() // config.trainer.global_batch_size)
    # The scheduler counts optimizer updates; the loop counts GRPO steps.
    scheduler_trainer = replace(config.trainer, train_steps=config.trainer.train_steps * updates_per_step)
    session = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        scheduler_trainer,
        config.checkpoint,
        vocab_size=plan.vocab_size,
    )
    pool = sandbox = None
    try:
        session.state.extra["tokenizer"] = plan.tokenizer.path
        if plan.held_out is not None:
            session.state.extra["held_out"] = {
                "questions": len(plan.held_out),
                "overlaps_dropped": plan.held_out_overlaps,
            }
        reference = build_reference_model(config, session)
        checker = None
        if session.runtime.tensor_parallel_rank == 0:
            pool = DeadlineWorkerPool(config.answer_check.num_workers, config.answer_check.timeout_s)
            checker = AnswerChecker(config.answer_check.options(), pool=pool)
            if config.rl.tool_use:
                sandbox = SandboxPool(config.sandbox.max_workers, config.sandbox.limits())
        if session.runtime.is_logging_rank:
            log.info(
                "GRPO: %d questions x %d samples per step on %d data-parallel rank(s), %d optimizer update(s) per step;"
                " prompts %s; tokenizer %s",
                config.rl.questions_per_step,
                config.rl.group_size,
                session.runtime.data_parallel_size,
                updates_per_step,
                plan.prompts.describe(),
                plan.tokenizer.path,
            )
            if plan.held_out is not None:
                log.info(
                    "held-out check: %d questions (%s), %d dropped as GRPO training questions",
                    len(plan.held_out),
                    config.eval_prompts.split,
                    plan.held_out_overlaps["total"],
                )
        scorer = critic = None
        if config.rl.reward_model:
            scorer = RewardModelScorer.load(
                config.rl.reward_model,
                config.parallelism,
                session.runtime.device,
                session.precision,
                config.trainer.micro_batch_size,
                plan.tokenizer,
            )
            if session.runtime.is_logging_rank:
                log.info("reward model: %s (%s)", config.rl.reward_model, plan.reward_model["kind"])
        if config.rl.advantage_estimator == "gae":
            critic = build_critic(config, session)
        trainer = GrpoTrainer(
            config,
            session,
            plan.tokenizer,
            reference,
            plan.prompts,
            plan.held_out,
            checker,
            sandbox,
            reward_scorer=scorer,
            critic=critic,
        )
        return trainer.run()
    finally:
        if sandbox is not None:
            sandbox.close()
        if pool is not None:
            pool.close()
        shutdown_runtime()
