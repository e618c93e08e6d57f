"""The body of `python -m megatron_recipes.pretrain` (see that module for how to run it): plan the run
(check data, tokenizer and checkpoints before any process group), then set up, train and tear
down."""

from __future__ import annotations

import logging

from megatron_recipes.config import PretrainConfig
from megatron_recipes.data.mixture import PretrainPlan, plan_pretraining_data
from megatron_recipes.data.pretraining import build_pretraining_datasets, pretraining_batches, validation_batches
from megatron_recipes.models.llama import training_flops_per_token
from megatron_recipes.runtime.distributed import resolve_device, shutdown_runtime
from megatron_recipes.training.loop import train
from megatron_recipes.training.session import setup_training

log = logging.getLogger("pretrain")


def plan_pretraining(config: PretrainConfig) -> PretrainPlan:
    """Resolve device, data and tokenizer; raise ConfigError with one line if the run cannot work."""
    resolve_device(config.trainer.device)  # trainer.device=cuda without CUDA, cpu with CUDA
    return plan_pretraining_data(config)


def run_pretraining(config: PretrainConfig, plan: PretrainPlan):
    """Set up, train, tear down; returns the TrainOutcome (exit code, reason, iteration)."""
    trainer = config.trainer
    session = setup_training(
        config.model, config.parallelism, config.optimizer, trainer, config.checkpoint, vocab_size=plan.vocab_size
    )
    try:
        runtime = session.runtime
        if plan.mixture is not None:
            # Recorded like SFT and GRPO do, so SFT, evaluation and generation from this checkpoint
            # find the tokenizer its data was made with.
            session.state.extra["tokenizer"] = plan.tokenizer.path
        if runtime.is_logging_rank and plan.mixture is not None:
            log.info("data mixture: %s", plan.mixture.describe())
        evaluations = trainer.train_steps // trainer.eval_interval if trainer.eval_interval else 0
        datasets = build_pretraining_datasets(
            config.data,
            plan.mixture,
            plan.tokenizer,
            train_samples=trainer.train_steps * trainer.global_batch_size,
            validation_samples=trainer.eval_steps * trainer.global_batch_size if evaluations else 0,
            cache_dir=plan.cache_dir,
        )
        batches = pretraining_batches(
            datasets.train,
            trainer.micro_batch_size,
            runtime.data_parallel_rank,
            runtime.data_parallel_size,
            session.state.consumed_samples,
            config.data.num_workers,
            worker_ignored_signals=tuple(trainer.exit_signals),
        )
        validation = None
        if evaluations and datasets.validation is not None:
            fixed = validation_batches(
                datasets.validation,
                trainer.micro_batch_size,
                runtime.data_parallel_rank,
                runtime.data_parallel_size,
                trainer.eval_steps * session.num_microbatches,
            )
            validation = lambda: fixed  # noqa: E731 - the same validation set every time
        return train(
            session,
            batches,
            validation_batches=validation,
            flops_per_token=training_flops_per_token(config.model, plan.vocab_size, config.data.seq_length),
        )
    finally:
        shutdown_runtime()
