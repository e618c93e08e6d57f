"""The body of `python -m megatron_recipes.sft` (see that module for how to run it): plan the run
(check data, tokenizer and checkpoints before any process group), then set up, train and tear
down."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from megatron_recipes.config import SftConfig
from megatron_recipes.data.chat import SftDataError
from megatron_recipes.data.model_tokenizer import training_tokenizer_path
from megatron_recipes.data.sft import build_sft_datasets, packed_seq_params, sft_batches
from megatron_recipes.generation.tokenizer import load_text_tokenizer
from megatron_recipes.models.llama import choose_layer_spec, training_flops_per_token
from megatron_recipes.runtime.distributed import resolve_device, shutdown_runtime
from megatron_recipes.training.loop import gpt_forward, train
from megatron_recipes.training.session import setup_training
from stack_common.errors import ConfigError

log = logging.getLogger("sft")


@dataclass
class SftPlan:
    tokenizer: object
    vocab_size: int
    train: object
    validation: object | None


def plan_sft(config: SftConfig) -> SftPlan:
    """Tokenizer, vocabulary and packed datasets, checked before any process group."""
    device = resolve_device(config.trainer.device)
    if config.sft_data.pack and device == "cuda" and config.trainer.micro_batch_size != 1:
        if choose_layer_spec(config.model, device, config.trainer.fp8).name == "transformer_engine":
            raise ConfigError(
                "packed SFT on Transformer Engine attention (thd format) needs trainer.micro_batch_size=1"
            )
    # The tokenizer follows the model: the one the starting checkpoint recorded (or of its HF weights).
    path, origin = training_tokenizer_path(
        config.sft_data.tokenizer, config.model.init_from_hf, config.checkpoint.init_from
    )
    tokenizer = load_text_tokenizer(path)
    vocab_size = config.model.vocab_size or tokenizer.vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.path} ({origin}) has {tokenizer.vocab_size} tokens but"
            f" model.vocab_size={vocab_size}: set sft_data.tokenizer to the model's tokenizer"
        )
    try:
        train, validation = build_sft_datasets(config.sft_data, config.chat_template, tokenizer)
    except SftDataError as error:
        raise ConfigError(str(error)) from None
    log.info("tokenizer: %s (%s)", tokenizer.path, origin)  # after the checks: a refused run prints one line
    return SftPlan(tokenizer, vocab_size, train, validation)


def packed_forward(model_chunk, batch):
    """GPTModel forward for packed sequences on Transformer Engine attention (thd format)."""
    return model_chunk(
        batch["tokens"],
        batch["position_ids"],
        None,
        labels=batch["labels"],
        packed_seq_params=packed_seq_params(batch["segment_ids"]),
    )


def run_sft(config: SftConfig, plan: SftPlan):
    """Set up, train, tear down; returns the TrainOutcome."""
    trainer, data = config.trainer, config.sft_data
    session = setup_training(
        config.model, config.parallelism, config.optimizer, trainer, config.checkpoint, vocab_size=plan.vocab_size
    )
    try:
        runtime = session.runtime
        session.state.extra["tokenizer"] = plan.tokenizer.path
        packed_on_te = data.pack and session.layer_spec == "transformer_engine"
        attention = "packed" if packed_on_te else ("mask" if data.pack else "none")
        summary = plan.train.summary
        total_samples = trainer.train_steps * trainer.global_batch_size
        session.state.extra["sft_data"] = {  # saved with the checkpoints: what the run trained on
            "examples": summary.examples,
            "kinds": dict(summary.kinds),
            "sequences": summary.sequences,
            "trained_tokens": summary.trained_tokens,
            "truncated": summary.truncated,
            "dropped": summary.dropped,
            "attention": attention,
        }
        if runtime.is_logging_rank:
            log.info(
                "SFT data: %d examples (%s) -> %d sequences of %d tokens (%.1f%% filled), %d response tokens;"
                " %d truncated, %d dropped, %d without response; %.2f epochs; attention %s",
                summary.examples,
                ", ".join(f"{k} {v}" for k, v in sorted(summary.kinds.items())),
                summary.sequences,
                data.seq_length,
                100 * summary.fill_rate(data.seq_length),
                summary.trained_tokens,
                summary.truncated,
                summary.dropped,
                summary.no_trained_tokens,
                total_samples / max(summary.sequences, 1),
                attention,
            )
        batches = sft_batches(
            plan.train,
            trainer.micro_batch_size,
            runtime.data_parallel_rank,
            runtime.data_parallel_size,
            session.state.consumed_samples,
            total_samples,
            attention,
        )
        validation = None
        if plan.validation is not None and trainer.eval_interval:
            count = trainer.eval_steps * trainer.global_batch_size
            fixed = list(
                sft_batches(
                    plan.validation,
                    trainer.micro_batch_size,
                    runtime.data_parallel_rank,
                    runtime.data_parallel_size,
                    0,
                    count,
                    attention,
                )
            )
            validation = lambda: fixed  # noqa: E731 - the same validation set every time
        return train(
            session,
            batches,
            forward_fn=packed_forward if packed_on_te else gpt_forward,
            validation_batches=validation,
            tokens_per_sample=data.seq_length,
            flops_per_token=training_flops_per_token(config.model, plan.vocab_size, data.seq_length),
        )
    finally:
        shutdown_runtime()
