"""The training core's sections, shared by pretraining, SFT and GRPO: `optimizer` (AdamW and its
learning-rate schedule, optimizer.py), `trainer` (the loop, loop.py) and `checkpoint`
(checkpointing.py), and the checks that span several sections."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_recipes.models.config import ModelConfig
from megatron_recipes.runtime.config import DEVICES, PRECISIONS, ParallelismConfig
from stack_common.checks import (
    require_choice,
    require_fraction,
    require_non_negative,
    require_positive,
    require_range,
)
from stack_common.errors import ConfigError

FP8_FORMATS = ("hybrid", "e4m3")
LR_SCHEDULES = ("multistep", "cosine", "linear", "constant")
OPTIMIZER_NAMES = ("adam", "sgd")
OPTIMIZER_CHECKPOINT_FORMATS = ("fully_reshardable", "dp_reshardable")
EXIT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule (DeepSeekMath / DeepSeek LLM defaults).

    Schedules (steps counted from 0, `decay_steps` defaulting to trainer.train_steps):
    - multistep: linear warmup to `lr` over `warmup_steps`, then `lr x multistep_factors[i]` from
      `multistep_milestones[i] x decay_steps` on (the paper: 31.6% at 80%, 10% at 90%);
    - cosine / linear: warmup, then decay to `lr x min_lr_ratio` at decay_steps;
    - constant: warmup, then `lr`.
    """

    name: str = "adam"
    lr: float = 4.2e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    lr_schedule: str = "multistep"
    warmup_steps: int = 2000
    decay_steps: int | None = None
    multistep_milestones: list[float] = field(default_factory=lambda: [0.8, 0.9])
    multistep_factors: list[float] = field(default_factory=lambda: [0.316, 0.1])

    def validate(self) -> None:
        require_choice("optimizer.name", self.name, OPTIMIZER_NAMES)
        require_choice("optimizer.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        require_positive("optimizer.lr", self.lr)
        require_fraction("optimizer.min_lr_ratio", self.min_lr_ratio)
        require_non_negative("optimizer.warmup_steps", self.warmup_steps)
        if self.decay_steps is not None:
            require_positive("optimizer.decay_steps", self.decay_steps)
        if len(self.multistep_milestones) != len(self.multistep_factors):
            raise ConfigError(
                f"optimizer.multistep_milestones has {len(self.multistep_milestones)} entries but"
                f" optimizer.multistep_factors has {len(self.multistep_factors)}: give one factor per milestone"
            )
        for index, milestone in enumerate(self.multistep_milestones):
            require_range(f"optimizer.multistep_milestones[{index}]", milestone, 0, 1, low_inclusive=False)
        if list(self.multistep_milestones) != sorted(self.multistep_milestones):
            raise ConfigError(f"optimizer.multistep_milestones={list(self.multistep_milestones)} must be increasing")
        for index, factor in enumerate(self.multistep_factors):
            require_non_negative(f"optimizer.multistep_factors[{index}]", factor)
        require_range("optimizer.adam_beta1", self.adam_beta1, 0, 1, high_inclusive=False)
        require_range("optimizer.adam_beta2", self.adam_beta2, 0, 1, high_inclusive=False)
        require_non_negative("optimizer.clip_grad", self.clip_grad)  # 0 = no clipping


@dataclass
class TrainerConfig:
    """The training loop: batch sizes, length, precision, logging, and how a run stops."""

    device: str = "auto"
    # auto: bf16 on CUDA, fp32 on the CPU.
    precision: str = "auto"
    # FP8 through Transformer Engine (CUDA + TE only): hybrid or e4m3; null = off.
    fp8: str | None = None
    train_steps: int = 100
    global_batch_size: int = 8
    micro_batch_size: int = 2
    seed: int = 1234
    log_interval: int = 1
    # Validation loss every eval_interval steps over eval_steps global batches (0 = never).
    eval_interval: int = 0
    eval_steps: int = 1
    output_dir: str = "outputs/pretrain/${model.name}"
    tensorboard: bool = True
    # Graceful stop: on any of exit_signals, every rank finishes its step, a checkpoint is
    # written, exit_status.json records why, and the processes exit with signal_exit_code.
    exit_signal_handler: bool = True
    exit_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    # 75 = EX_TEMPFAIL ("try again"): a launcher requeues on it; a finished run exits 0.
    signal_exit_code: int = 75
    # Stop (checkpoint + exit with signal_exit_code) after this much wall time; null = never.
    exit_duration_minutes: float | None = None
    # Dense peak TFLOP/s of one device for the MFU estimate; null = known GPUs, none on CPU.
    peak_tflops_per_device: float | None = None
    distributed_timeout_minutes: int = 30

    def validate(self) -> None:
        require_choice("trainer.device", self.device, DEVICES)
        require_choice("trainer.precision", self.precision, PRECISIONS)
        require_choice("trainer.fp8", self.fp8, FP8_FORMATS, allow_none=True)
        if self.fp8 is not None and self.device == "cpu":
            raise ConfigError("trainer.fp8 needs a CUDA device with Transformer Engine, not trainer.device=cpu")
        if self.device == "cpu" and self.precision in ("bf16", "fp16"):
            raise ConfigError(f"trainer.precision={self.precision} is not supported on the CPU; use fp32 (or auto)")
        for name in ("train_steps", "global_batch_size", "micro_batch_size", "log_interval", "eval_steps"):
            require_positive(f"trainer.{name}", getattr(self, name))
        require_non_negative("trainer.eval_interval", self.eval_interval)  # 0 = no validation
        for index, name in enumerate(self.exit_signals):
            require_choice(f"trainer.exit_signals[{index}]", name, EXIT_SIGNALS)
        require_range("trainer.signal_exit_code", self.signal_exit_code, 0, 255)


@dataclass
class CheckpointConfig:
    """Checkpoints (megatron dist_checkpointing, loadable at any TP/PP/DP layout).

    Layout: `<dir>/iter_0000100/` per save, `<dir>/latest` (the iteration, written atomically
    after the directory is complete) and `<dir>/exit_status.json` (why the last run ended).
    A run resumes from `<dir>/latest` when there is one; otherwise it starts from the model
    weights at `init_from` (a converted HF checkpoint, another run's iter_* directory) or from
    random weights.
    """

    dir: str | None = "${trainer.output_dir}/checkpoints"
    # Save every N steps (0 = only at the end and on a stop signal).
    save_interval: int = 1000
    save_at_end: bool = True
    resume: bool = True
    init_from: str | None = None
    # Keep only the newest N iter_* directories (0 = keep all).
    keep_last: int = 0
    # fully_reshardable: optimizer state loadable at any TP/PP/DP (gathered per DP group on save);
    # dp_reshardable: faster save, loadable only when TP and PP are unchanged.
    optimizer_format: str = "fully_reshardable"

    def validate(self) -> None:
        require_non_negative("checkpoint.save_interval", self.save_interval)
        require_non_negative("checkpoint.keep_last", self.keep_last)
        require_choice("checkpoint.optimizer_format", self.optimizer_format, OPTIMIZER_CHECKPOINT_FORMATS)


def validate_training_layout(
    model: ModelConfig, parallelism: ParallelismConfig, trainer: TrainerConfig, seq_length: int | None = None
) -> None:
    """Checks that involve several sections: what megatron would refuse (or get wrong) later."""
    tp, pp = parallelism.tensor_model_parallel_size, parallelism.pipeline_model_parallel_size
    vp = parallelism.virtual_pipeline_model_parallel_size or 1
    if model.num_attention_heads % tp:
        raise ConfigError(
            f"model.num_attention_heads={model.num_attention_heads} is not divisible by tensor_model_parallel_size={tp}"
        )
    groups = model.num_query_groups or model.num_attention_heads
    if groups % tp:
        raise ConfigError(f"model.num_query_groups={groups} is not divisible by tensor_model_parallel_size={tp}")
    if model.ffn_hidden_size % tp:
        raise ConfigError(
            f"model.ffn_hidden_size={model.ffn_hidden_size} is not divisible by tensor_model_parallel_size={tp}"
        )
    if model.num_layers % (pp * vp):
        raise ConfigError(
            f"model.num_layers={model.num_layers} is not divisible by pipeline_model_parallel_size x virtual size = "
            f"{pp}x{vp}"
        )
    data_parallel = parallelism.data_parallel_size()
    if trainer.global_batch_size % (trainer.micro_batch_size * data_parallel):
        raise ConfigError(
            f"trainer.global_batch_size={trainer.global_batch_size} is not divisible by micro_batch_size x "
            "data-parallel size"
            f" = {trainer.micro_batch_size}x{data_parallel}"
        )
    micro_batches = trainer.global_batch_size // (trainer.micro_batch_size * data_parallel)
    if parallelism.virtual_pipeline_model_parallel_size and micro_batches % pp:
        raise ConfigError(
            f"interleaved pipeline needs the number of micro-batches ({micro_batches}) to be a multiple of "
            f"pipeline_model_parallel_size={pp}"
        )
    if parallelism.sequence_parallel and seq_length is not None and seq_length % tp:
        raise ConfigError(
            f"data.seq_length={seq_length} is not divisible by tensor_model_parallel_size={tp} (sequence parallel)"
        )
    if seq_length is not None and seq_length > model.max_position_embeddings:
        raise ConfigError(
            f"data.seq_length={seq_length} exceeds model.max_position_embeddings={model.max_position_embeddings}"
        )
    if trainer.fp8 is not None and model.transformer_impl == "local":
        raise ConfigError(
            "trainer.fp8 needs model.transformer_impl=transformer_engine (or auto on a CUDA machine with TE)"
        )


def validate_init_sources(model: ModelConfig, checkpoint: CheckpointConfig) -> None:
    if model.init_from_hf and checkpoint.init_from:
        raise ConfigError(
            "set either model.init_from_hf (Hugging Face weights) or checkpoint.init_from (megatron weights), not both"
        )


def validate_warmup_fits(optimizer: OptimizerConfig, trainer: TrainerConfig) -> None:
    """A decaying schedule measured over trainer.train_steps needs its warmup to end before then."""
    if optimizer.decay_steps is None and optimizer.lr_schedule != "constant":
        if optimizer.warmup_steps >= trainer.train_steps:
            raise ConfigError(
                f"optimizer.warmup_steps={optimizer.warmup_steps} must be below "
                f"trainer.train_steps={trainer.train_steps}"
                " (or set optimizer.decay_steps)"
            )
