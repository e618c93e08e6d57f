"""The body of `python -m megatron_recipes.reward_model` (see that module for how to run it): plan
the run (tokenizer, checkpoints and the labelled data, read and checked before any process group),
then set up, train and tear down."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from megatron_recipes.config import RewardModelConfig
from megatron_recipes.generation.tokenizer import load_text_tokenizer
from megatron_recipes.reward_models.data import (
    DEAD_LETTER_FILE,
    RewardBatches,
    check_no_shared_questions,
    read_examples,
    split_by_question,
)
from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.model import NEW_MODULES, build_reward_model
from megatron_recipes.reward_models.trainer import RewardModelTrainer
from megatron_recipes.runtime.distributed import resolve_device, shutdown_runtime
from megatron_recipes.training.checkpointing import CheckpointError, latest_iteration, read_checkpoint_info
from megatron_recipes.training.session import setup_training
from stack_common.errors import ConfigError

log = logging.getLogger("reward_model")


@dataclass
class RewardModelPlan:
    tokenizer: object
    vocab_size: int
    batches: RewardBatches
    validation: list
    summary: dict
    dead_letters: list = field(default_factory=list)


def recorded_info(path: str | None) -> dict:
    """checkpoint_info.json of a checkpoint (a run or iter_* directory), {} for none."""
    if not path:
        return {}
    try:
        return read_checkpoint_info(path)
    except (CheckpointError, FileNotFoundError) as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None


def plan_reward_model(config: RewardModelConfig) -> RewardModelPlan:
    """Tokenizer, vocabulary and the data, read and checked before any process group."""
    settings = config.reward_model
    resolve_device(config.trainer.device)
    resuming = bool(
        config.checkpoint.dir and config.checkpoint.resume and latest_iteration(config.checkpoint.dir) is not None
    )
    start = recorded_info(config.checkpoint.dir if resuming else config.checkpoint.init_from)
    recorded_model = dict(start.get("model_config") or {})
    for name in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size"):
        if name in recorded_model and recorded_model[name] != getattr(config.model, name):
            raise ConfigError(
                f"model.{name}={getattr(config.model, name)} but the starting checkpoint has"
                f" {recorded_model[name]}: pick its model preset"
            )
    tokenizer_path = config.tokenizer or (start.get("train_state", {}).get("extra", {}) or {}).get("tokenizer", "")
    tokenizer = load_text_tokenizer(tokenizer_path)
    vocab_size = int(config.model.vocab_size or recorded_model.get("vocab_size") or tokenizer.vocab_size)
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens"
            f" but the model's vocabulary is {vocab_size}"
        )
    dead_letters: list[dict] = []
    reader = functools.partial(
        read_examples,
        kind=settings.kind,
        tokenizer=tokenizer,
        separator=settings.step_separator,
        seq_length=settings.seq_length,
        outcome_field=settings.outcome_field,
        step_field=settings.step_label_field,
        dead_letters=dead_letters,
        outcome_pooling=settings.outcome_pooling,
    )
    train, train_summary = reader(settings.train_paths, "reward_model.train_paths")
    replay, replay_summary = reader(settings.replay_paths, "reward_model.replay_paths")
    if settings.validation_paths:
        validation, validation_summary = reader(
            settings.validation_paths,
            "reward_model.validation_paths",
            step_field=settings.validation_step_label_field or settings.step_label_field,
        )
    else:
        # The same split of every file by question: a question held out of the new data is held
        # out of the replayed data too (iterative RL samples the same questions every round).
        train, validation = split_by_question(train, settings.validation_fraction, settings.seed)
        replay, _ = split_by_question(replay, settings.validation_fraction, settings.seed)
        validation_summary = None
    check_no_shared_questions(validation, train, replay)
    batches = RewardBatches(
        train,
        replay,
        config.trainer.global_batch_size,
        settings.replayed_per_batch(config.trainer.global_batch_size),
        settings.seed,
    )
    summary = {
        "train": train_summary.as_dict(),
        "replay": replay_summary.as_dict(),
        "validation": validation_summary.as_dict() if validation_summary else {"split_from_train": len(validation)},
        "train_examples": len(train),
        "validation_examples": len(validation),
    }
    return RewardModelPlan(tokenizer, vocab_size, batches, validation, summary, dead_letters)


def model_record(settings) -> dict:
    """What a reward model's checkpoints record beside its ModelConfig (export and scoring read it)."""
    kind = get_reward_model_kind(settings.kind)
    record = {"reward_model_kind": kind.name, "hf_class": kind.hf_class, "step_separator": settings.step_separator}
    if settings.outcome_pooling != "last_token":
        # Its scores are read at step ends and pooled by the reader: it exports as a per-token
        # score model (the product of the step-end sigmoids is P(correct)), not a last-token one.
        record["outcome_pooling"] = settings.outcome_pooling
        record["hf_class"] = get_reward_model_kind("prm").hf_class
    return record


def run_reward_model(config: RewardModelConfig, plan: RewardModelPlan):
    """Set up, train, tear down; returns the TrainOutcome."""
    settings = config.reward_model
    session = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        config.trainer,
        config.checkpoint,
        vocab_size=plan.vocab_size,
        model_builder=functools.partial(build_reward_model, kind=settings.kind),
        new_modules=NEW_MODULES,
        model_record=model_record(settings),
    )
    try:
        session.state.extra["tokenizer"] = plan.tokenizer.path
        session.state.extra["reward_data"] = plan.summary
        if session.runtime.is_logging_rank:
            output = Path(config.trainer.output_dir)
            output.mkdir(parents=True, exist_ok=True)
            if plan.dead_letters:
                (output / DEAD_LETTER_FILE).write_text("".join(json.dumps(d) + "\n" for d in plan.dead_letters))
            log.info(
                "%s: %d training records (%d replayed per batch of %d from %d earlier records), %d held out;"
                " dropped %s",
                settings.kind.upper(),
                plan.summary["train_examples"],
                plan.batches.replayed,
                config.trainer.global_batch_size,
                len(plan.batches.replay),
                plan.summary["validation_examples"],
                plan.summary["train"]["dropped"] or "none",
            )
        trainer = RewardModelTrainer(
            session,
            plan.batches,
            plan.validation,
            plan.tokenizer.eod,
            config.trainer.eval_interval,
            settings.outcome_pooling,
        )
        return trainer.run()
    finally:
        shutdown_runtime()
