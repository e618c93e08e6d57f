"""pretrain: (continued) pretraining of a LLaMA-style model on a data mixture with megatron-core.

Locally (CPU, the sample corpus after `python -m beam_pipelines.prepare` and
`python -m beam_pipelines.tokenize`):
    python -m megatron_recipes.pretrain +experiment=tiny_cpu
    torchrun --nproc-per-node 2 -m megatron_recipes.pretrain +experiment=tiny_cpu parallelism=tp2
    python -m megatron_recipes.pretrain trainer=cpu data=mock model=tiny trainer.train_steps=20
On a cluster (one process per GPU; torchrun per node, or srun with one task per GPU):
    torchrun --nnodes $N --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 \\
        --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout 300 \\
        -m megatron_recipes.pretrain +experiment=deepseekmath_base_7b corpus.work_dir=/data/dsm \\
        checkpoint.init_from=/ckpt/coder_v15      # or model.init_from_hf=/models/deepseek-coder-7b-base-v1.5
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.pretrain +experiment=corpus_comparison_1p3b
Impossible settings (heads vs TP, layers vs PP, batch vs micro-batch x DP, missing data,
vocabulary too small for the tokenizer, data tokenized with another tokenizer) fail before any
process group exists, with one line `error: ...` and exit status 2. The tokenizer follows the
model: with model.init_from_hf the checkpoint's own tokenizer.json is used (and recorded in this
run's checkpoints), so the tokenize step must use it too (tokenizer.path=<the HF checkpoint>).

Restarting the same command resumes from `<checkpoint.dir>/latest` (model, optimizer, lr
schedule, RNG, data position), at any TP/PP/DP layout. SIGTERM/SIGUSR1 make it checkpoint and
exit with `trainer.signal_exit_code` (75); `exit_status.json` says why (training/signals.py).

Outputs under trainer.output_dir: checkpoints/ (see training/checkpointing.py),
metrics.jsonl, tensorboard/. megatron's sample indices are cached beside each dataset
(`<prefix>/cache/`) unless data.cache_dir says otherwise.
Cost: per step one forward+backward of global_batch_size x seq_length tokens; the data
indices are built once (O(samples)) and cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from megatron_recipes.config import PretrainConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.errors import ConfigError
from stack_common.logs import TRAINING_CONSOLE

log = logging.getLogger("pretrain")


@dataclass
class PretrainPlan:
    """Everything checked before any process group: device, data files, tokenizer, vocabulary."""

    mixture: object | None
    tokenizer: object
    vocab_size: int
    cache_dir: str | None


def plan_pretraining(config: PretrainConfig) -> PretrainPlan:
    """Resolve device, data and tokenizer; raise ConfigError with one line if the run cannot work."""
    from megatron_recipes.runtime.distributed import resolve_device

    resolve_device(config.trainer.device)  # trainer.device=cuda without CUDA, cpu with CUDA
    return plan_pretraining_data(config)


def plan_pretraining_data(config: PretrainConfig) -> PretrainPlan:
    """Data and tokenizer (no device needed: launch/slurm/recipe_config.py runs it before queueing).

    The tokenizer follows the model (megatron_recipes/data/model_tokenizer.py): data.tokenizer,
    else the tokenizer of model.init_from_hf, else the one checkpoint.init_from recorded, else
    DeepSeek's; every dataset of the mixture must have been tokenized with it."""
    from megatron_recipes.data.model_tokenizer import check_data_tokenizer, training_tokenizer_path
    from megatron_recipes.data.pretraining import SyntheticTokenizer, load_tokenizer, resolve_mixture

    data, model = config.data, config.model
    for name, (old, new) in model.adopt_init_from_hf().items():
        log.info("model.%s = %s from %s/config.json (preset: %s)", name, new, model.init_from_hf, old)
    if data.mock:
        vocab_size = model.vocab_size or 32000
        return PretrainPlan(None, SyntheticTokenizer(vocab_size), vocab_size, data.cache_dir or None)
    path, origin = training_tokenizer_path(data.tokenizer, model.init_from_hf, config.checkpoint.init_from)
    tokenizer = load_tokenizer(path)
    vocab_size = model.vocab_size or tokenizer.vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.path} ({origin}) has {tokenizer.vocab_size} tokens but"
            f" model.vocab_size={vocab_size}: set data.tokenizer to the model's tokenizer (or model.vocab_size=null)"
        )
    mixture = resolve_mixture(data)
    unverified = check_data_tokenizer(mixture, tokenizer)
    if unverified:
        log.warning(
            "%d dataset(s) carry no tokenizer record (not made by beam_pipelines.tokenize?), their tokenizer is"
            " not checked: %s",
            len(unverified),
            ", ".join(unverified[:5]) + (" ..." if len(unverified) > 5 else ""),
        )
    # Logged once the checks pass: a refused run prints its one error line only.
    log.info(
        "tokenizer: %s (%s; sha256 %s, %d ids)", tokenizer.path, origin, tokenizer.sha256[:12], tokenizer.vocab_size
    )
    return PretrainPlan(mixture, tokenizer, vocab_size, data.cache_dir or None)


def run_pretraining(config: PretrainConfig, plan: PretrainPlan):
    """Set up, train, tear down; returns the TrainOutcome (exit code, reason, iteration)."""
    from megatron_recipes.data.pretraining import build_pretraining_datasets, pretraining_batches, validation_batches
    from megatron_recipes.models import training_flops_per_token
    from megatron_recipes.runtime import shutdown_runtime
    from megatron_recipes.training.loop import train
    from megatron_recipes.training.session import setup_training

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


@hydra_entry_point("pretrain", register_configs, console=TRAINING_CONSOLE)
def main(config: PretrainConfig) -> int:
    """Returns the exit status: 0, or trainer.signal_exit_code after a signal or time limit."""
    return run_pretraining(config, plan_pretraining(config)).exit_code


if __name__ == "__main__":
    main()
