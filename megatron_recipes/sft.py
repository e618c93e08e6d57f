"""sft: supervised fine-tuning on chat-form math solutions (chain-of-thought, program-of-thought,
tool-integrated), loss on response tokens only, examples packed to the context length.

Locally (CPU; JSONL records as in megatron_recipes/data/sft.py):
    python -m megatron_recipes.sft +experiment=sft_tiny_cpu sft_data.paths=[data/sft.jsonl] \\
        checkpoint.init_from=outputs/pretrain/tiny_cpu/checkpoints
    torchrun --nproc-per-node 2 -m megatron_recipes.sft +experiment=sft_tiny_cpu parallelism=tp2 sft_data.paths=[...]
On a cluster (the paper's setting: 7B, packed to 4K, batch 256, constant lr 5e-5, 500 steps):
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.sft +experiment=sft_paper_7b \\
        sft_data.paths=[/data/sft] checkpoint.init_from=/ckpt/deepseekmath_base
    (or torchrun --nnodes N --nproc-per-node 8 ... -m megatron_recipes.sft ..., as for pretrain)
Bad settings and unreadable data fail before any process group, with one line `error: ...` and
exit status 2. Restarting the same command resumes from `<checkpoint.dir>/latest` (model,
optimizer, schedule, RNG, data position); SIGTERM/SIGUSR1 checkpoint and exit 75.

The tokenizer follows the model: sft_data.tokenizer if set, else the one the starting checkpoint
(checkpoint.init_from) recorded, else the tokenizer.json of model.init_from_hf, else DeepSeek's.
The run records its tokenizer in the checkpoints (train_state.extra.tokenizer), so GRPO and
`python -m megatron_recipes.evaluate generator=megatron` find it.
Outputs under trainer.output_dir: checkpoints/, metrics.jsonl, tensorboard/.
Cost: reading and packing is linear in the data (once, on every rank); then per step one
forward/backward of global_batch_size x seq_length tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from megatron_recipes.config import SftConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.errors import ConfigError
from stack_common.logs import TRAINING_CONSOLE

log = logging.getLogger("sft")


@dataclass
class SftPlan:
    tokenizer: object
    vocab_size: int
    train: object
    validation: object | None


def plan_sft(config: SftConfig) -> SftPlan:
    """Tokenizer, vocabulary and packed datasets, checked before any process group."""
    from megatron_recipes.data.model_tokenizer import training_tokenizer_path
    from megatron_recipes.data.sft import SftDataError, build_sft_datasets
    from megatron_recipes.generation.tokenizer import load_text_tokenizer
    from megatron_recipes.runtime.distributed import resolve_device

    device = resolve_device(config.trainer.device)
    if config.sft_data.pack and device == "cuda" and config.trainer.micro_batch_size != 1:
        from megatron_recipes.models import choose_layer_spec

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
    from megatron_recipes.data.sft import packed_seq_params

    return model_chunk(
        batch["tokens"],
        batch["position_ids"],
        None,
        labels=batch["labels"],
        packed_seq_params=packed_seq_params(batch["segment_ids"]),
    )


def run_sft(config: SftConfig, plan: SftPlan):
    """Set up, train, tear down; returns the TrainOutcome."""
    from megatron_recipes.data.sft import sft_batches
    from megatron_recipes.models import training_flops_per_token
    from megatron_recipes.runtime import shutdown_runtime
    from megatron_recipes.training.loop import gpt_forward, train
    from megatron_recipes.training.session import setup_training

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


@hydra_entry_point("sft", register_configs, console=TRAINING_CONSOLE)
def main(config: SftConfig) -> int:
    """Returns the exit status: 0, or trainer.signal_exit_code after a signal or time limit."""
    return run_sft(config, plan_sft(config)).exit_code


if __name__ == "__main__":
    main()
