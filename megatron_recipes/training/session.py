"""A training session: runtime + model (DDP) + optimizer + scheduler + state, restored or fresh.

    session = setup_training(model_cfg, parallelism, optimizer_cfg, trainer, checkpoint,
                             vocab_size=tokenizer_vocab)
    session.num_microbatches, session.state.iteration, session.model (DDP chunks), ...

Restore order: if `checkpoint.resume` and `<checkpoint.dir>/latest` exists, the full state
(model, optimizer, scheduler, RNG, TrainState) comes from there, at whatever layout it was
saved; else if `checkpoint.init_from` is set, only the model weights come from there (a
converted HF model, another run); else if `model.init_from_hf` is set, the weights are read
from that Hugging Face directory straight into this layout (megatron_recipes.convert, whose
config.json also fixed the architecture); else the model keeps its seeded random init.

`model_builder(model_cfg, parallelism, vocab_size, device, precision, fp8) -> list[GPTModel]`
may replace the default LLaMA builder (a recipe with another architecture, e.g. a reward model);
it must build this rank's chunks. `new_modules` (key prefixes) name parts of that model which
an init checkpoint may lack (a reward head on a policy): they keep their initial values. SFT
and GRPO call `setup_training` as pretraining does; a frozen reference model is built with
`build_model` + `load_model_weights` (no optimizer, no DDP needed).

Cost: one model, its gradients and optimizer state on this rank's share of the layout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.transformer.module import Float16Module

from megatron_recipes.convert.hf_to_megatron import load_hf_weights
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model, choose_layer_spec, parameter_count, resolve_precision
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.distributed import Runtime, initialize_runtime
from megatron_recipes.training.checkpointing import _unwrap, latest_iteration, load_checkpoint, load_model_weights
from megatron_recipes.training.config import CheckpointConfig, OptimizerConfig, TrainerConfig
from megatron_recipes.training.optimizer import build_optimizer, build_scheduler, use_foreach_adam

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What, besides weights and optimizer, a resumed run needs to continue exactly.

    `extra` is for recipes (e.g. GRPO's last reference-model reset); keep it JSON-serialisable.
    """

    iteration: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainState":
        return cls(
            int(values.get("iteration", 0)),
            int(values.get("consumed_samples", 0)),
            int(values.get("consumed_tokens", 0)),
            dict(values.get("extra", {})),
        )


@dataclass
class TrainingSession:
    runtime: Runtime
    model_config: ModelConfig
    parallelism: ParallelismConfig
    optimizer_config: OptimizerConfig
    trainer: TrainerConfig
    checkpoint: CheckpointConfig
    model: list  # DDP-wrapped GPTModel chunks, one per virtual pipeline stage
    optimizer: Any
    scheduler: Any
    transformer_config: Any
    vocab_size: int
    precision: str
    layer_spec: str
    state: TrainState = field(default_factory=TrainState)
    restored_from: str | None = None
    # Recorded with model_config beside the ModelConfig fields (e.g. a reward model's kind).
    model_record: dict[str, Any] = field(default_factory=dict)

    @property
    def num_microbatches(self) -> int:
        return self.trainer.global_batch_size // (self.trainer.micro_batch_size * self.runtime.data_parallel_size)

    def unwrapped_model(self) -> list:
        return [_unwrap(chunk) for chunk in self.model]

    def model_config_record(self) -> dict[str, Any]:
        """What a checkpoint stores so that tools can rebuild the model."""
        return {**asdict(self.model_config), "vocab_size": self.vocab_size, **self.model_record}


def wrap_for_training(chunks: list, transformer_config, parallelism: ParallelismConfig) -> list:
    """megatron DDP around each chunk (gradient buffers, reduce-scatter for the distributed
    optimizer), and the schedule hooks Megatron-LM sets on the model config."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=parallelism.overlap_grad_reduce,
        overlap_param_gather=parallelism.overlap_param_gather,
        use_distributed_optimizer=parallelism.use_distributed_optimizer,
        check_for_nan_in_grad=True,
    )
    wrapped = [
        DistributedDataParallel(
            config=transformer_config,
            ddp_config=ddp_config,
            module=chunk,
            # Only the first chunk's gradients overlap with backward compute.
            disable_bucketing=index > 0,
        )
        for index, chunk in enumerate(chunks)
    ]
    config = transformer_config
    no_sync = [chunk.no_sync for chunk in wrapped]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    if parallelism.overlap_grad_reduce:
        grad_sync = [chunk.start_grad_sync for chunk in wrapped]
        config.grad_sync_func = grad_sync[0] if len(grad_sync) == 1 else grad_sync
    if parallelism.overlap_param_gather:
        param_sync = [chunk.start_param_sync for chunk in wrapped]
        config.param_sync_func = param_sync[0] if len(param_sync) == 1 else param_sync
    config.finalize_model_grads_func = finalize_model_grads
    return wrapped


def setup_training(
    model_config: ModelConfig,
    parallelism: ParallelismConfig,
    optimizer_config: OptimizerConfig,
    trainer: TrainerConfig,
    checkpoint: CheckpointConfig,
    vocab_size: int,
    runtime: Runtime | None = None,
    model_builder: Callable[..., list] | None = None,
    new_modules: tuple[str, ...] = (),
    model_record: dict[str, Any] | None = None,
) -> TrainingSession:
    """Everything a training loop needs, restored from checkpoints where there are any."""
    model_config.adopt_init_from_hf()  # the HF architecture, if any (idempotent, before building)
    runtime = runtime or initialize_runtime(
        trainer.device, parallelism, seed=trainer.seed, timeout_minutes=trainer.distributed_timeout_minutes
    )
    precision = resolve_precision(trainer.precision, runtime.device)
    choice = choose_layer_spec(model_config, runtime.device, trainer.fp8)
    if model_builder is None:
        chunks = build_model(
            model_config,
            parallelism,
            vocab_size,
            device=runtime.device,
            precision=precision,
            fp8=trainer.fp8,
            layer_spec=choice,
        )
    else:
        chunks = model_builder(model_config, parallelism, vocab_size, runtime.device, precision, trainer.fp8)
    if precision in ("bf16", "fp16"):
        chunks = [Float16Module(chunk.config, chunk) for chunk in chunks]
    transformer_config = chunks[0].config
    model = wrap_for_training(chunks, transformer_config, parallelism)
    optimizer = build_optimizer(model, optimizer_config, parallelism, precision)
    transformer_config.grad_scale_func = optimizer.scale_loss
    scheduler = build_scheduler(optimizer, optimizer_config, trainer.train_steps)
    if runtime.is_logging_rank:
        log.info(
            "model %s: %s parameters on rank 0 (%s layers, layer spec %s, %s)",
            model_config.name,
            f"{parameter_count(chunks):,}",
            model_config.num_layers,
            choice.name,
            precision,
        )

    session = TrainingSession(
        runtime,
        model_config,
        parallelism,
        optimizer_config,
        trainer,
        checkpoint,
        model,
        optimizer,
        scheduler,
        transformer_config,
        vocab_size,
        precision,
        choice.name,
        model_record=dict(model_record or {}),
    )
    resumable = checkpoint.dir and checkpoint.resume and latest_iteration(checkpoint.dir) is not None
    if resumable:
        loaded = load_checkpoint(checkpoint.dir, model, optimizer, scheduler)
        use_foreach_adam(optimizer)  # the checkpoint's param_groups replaced ours
        session.state = TrainState.from_dict(loaded.train_state)
        session.restored_from = str(loaded.path)
        if runtime.is_logging_rank:
            log.info(
                "resumed from %s at iteration %d (rng %s)",
                loaded.path,
                session.state.iteration,
                "restored" if loaded.rng_restored else "reseeded: layout changed",
            )
    elif checkpoint.init_from:
        loaded = load_model_weights(checkpoint.init_from, model, new_modules=new_modules)
        optimizer.reload_model_params()
        session.restored_from = str(loaded.path)
        if runtime.is_logging_rank:
            log.info("initialised model weights from %s", loaded.path)
    elif model_config.init_from_hf:
        load_hf_weights(model_config.init_from_hf, model, new_modules=new_modules)
        optimizer.reload_model_params()
        session.restored_from = str(model_config.init_from_hf)
        if runtime.is_logging_rank:
            log.info("initialised model weights from the Hugging Face checkpoint %s", model_config.init_from_hf)
    return session
