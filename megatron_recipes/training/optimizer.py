"""Optimizer and learning-rate schedule on megatron-core's machinery.

    optimizer = build_optimizer(model_chunks, settings, parallelism, precision)   # get_megatron_optimizer
    scheduler = build_scheduler(optimizer, settings, train_steps)
    learning_rate_at(step, settings, train_steps)   # the schedule as a pure function

`build_optimizer` is megatron-core's `get_megatron_optimizer` (AdamW with decoupled weight
decay, no decay on norms/biases, gradient clipping, the distributed optimizer when asked). The
schedule is megatron's `OptimizerParamScheduler` (it also drives weight decay and per-group lr
overrides, and its state dict is what Megatron-LM checkpoints hold), extended with DeepSeek's
multi-step decay.

Distributed optimizer with torch's Adam. Without Transformer Engine or Apex (always the case on
the CPU; also on a GPU without them) megatron-core falls back to `torch.optim.AdamW`, whose
per-parameter `step` counter the distributed optimizer's checkpoint code does not expect:
(a) building the load request on a fresh optimizer asserts (no state yet), and so does saving
    before the first optimizer step (a GRPO run whose every update was skipped: all groups had
    one reward); both get the zero state a first step would create;
(b) `fully_reshardable` checkpoints carry no per-parameter `step` (KeyError on load), and
    `dp_reshardable` ones bring it back as 0;
(c) loading puts ONE `step` tensor into every parameter's state, so AdamW advances it once per
    parameter per step and its bias correction is silently wrong after a resume;
(d) fp32 main parameters are views of leaf parameters, so the in-place copy of loaded values
    needs autograd off.
`_make_distributed_optimizer_checkpoints_exact()` fixes all four; it is applied once, only when
megatron uses torch's optimizer. The resume-exactness test runs with the distributed optimizer.

Cost: optimizer state is 12 bytes per parameter (fp32 main copy + two moments), divided by the
data-parallel size with the distributed optimizer.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import torch
from megatron.core import optimizer as megatron_optimizer
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.training.config import OptimizerConfig

log = logging.getLogger(__name__)

_fix_lock = threading.Lock()
_fix_applied = False


def learning_rate_at(step: int, settings: OptimizerConfig, train_steps: int) -> float:
    """The learning rate of update number `step + 1` (megatron's convention: the scheduler sets the
    rate for `num_steps` completed updates, so warmup starts from 0)."""
    peak = settings.lr
    decay_steps = settings.decay_steps or train_steps
    warmup = settings.warmup_steps
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if settings.lr_schedule == "constant":
        return peak
    if settings.lr_schedule == "multistep":
        factor = 1.0
        for milestone, milestone_factor in zip(settings.multistep_milestones, settings.multistep_factors):
            if step >= milestone * decay_steps:
                factor = milestone_factor
        return peak * factor
    minimum = peak * settings.min_lr_ratio
    if step >= decay_steps:
        return minimum
    progress = (step - warmup) / max(1, decay_steps - warmup)
    if settings.lr_schedule == "cosine":
        coefficient = 0.5 * (math.cos(math.pi * progress) + 1.0)
    else:  # linear
        coefficient = 1.0 - progress
    return minimum + coefficient * (peak - minimum)


def _scheduler_class():
    class LearningRateScheduler(OptimizerParamScheduler):
        """megatron's scheduler with the `multistep` style added (others are megatron's own)."""

        def __init__(self, optimizer, settings: OptimizerConfig, train_steps: int):
            self.settings = settings
            self.train_steps = train_steps
            decay_steps = settings.decay_steps or train_steps
            style = settings.lr_schedule
            super().__init__(
                optimizer,
                init_lr=0.0,
                max_lr=settings.lr,
                min_lr=settings.lr * settings.min_lr_ratio if style in ("cosine", "linear") else 0.0,
                lr_warmup_steps=min(settings.warmup_steps, decay_steps - 1),
                lr_decay_steps=decay_steps,
                lr_decay_style="constant" if style == "multistep" else style,
                start_wd=settings.weight_decay,
                end_wd=settings.weight_decay,
                wd_incr_steps=decay_steps,
                wd_incr_style="constant",
                use_checkpoint_opt_param_scheduler=False,
                override_opt_param_scheduler=True,
            )

        def get_lr(self, param_group: dict) -> float:
            if self.settings.lr_schedule != "multistep":
                return super().get_lr(param_group)
            scale = param_group.get("max_lr", self.max_lr) / self.max_lr if self.max_lr else 1.0
            return scale * learning_rate_at(self.num_steps, self.settings, self.train_steps)

        def state_dict(self) -> dict:
            return {**super().state_dict(), "schedule": self.settings.lr_schedule}

    return LearningRateScheduler


def build_scheduler(optimizer, settings: OptimizerConfig, train_steps: int):
    """The learning-rate (and weight-decay) scheduler; call `.step(1)` after each update."""
    return _scheduler_class()(optimizer, settings, train_steps)


def build_optimizer(
    model_chunks: list, settings: OptimizerConfig, parallelism: ParallelismConfig, precision: str = "fp32"
):
    """megatron-core optimizer over DDP-wrapped chunks (see module docstring)."""
    if megatron_optimizer.USING_PYTORCH_OPTIMIZER and parallelism.use_distributed_optimizer:
        _make_distributed_optimizer_checkpoints_exact()
    config = MegatronOptimizerConfig(
        optimizer=settings.name,
        lr=settings.lr,
        min_lr=settings.lr * settings.min_lr_ratio,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        clip_grad=settings.clip_grad,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        params_dtype=_dtype(precision),
        use_distributed_optimizer=parallelism.use_distributed_optimizer,
        overlap_param_gather=parallelism.overlap_param_gather,
    )
    optimizer = get_megatron_optimizer(config, model_chunks)
    use_foreach_adam(optimizer)
    return optimizer


def use_foreach_adam(optimizer) -> None:
    """torch's AdamW (megatron's fallback without TE/Apex) over CPU parameters takes its foreach
    implementation: torch picks it by default only for CUDA tensors, and the per-parameter loop
    it uses otherwise costs a dozen Python-level torch calls per parameter (each also through the
    CPU runtime layer's function mode). On the CPU the foreach ops run the same kernels on every
    tensor in the same order, so the update is equal bit for bit (test_foreach_adam_is_exact).
    Loading a checkpoint restores the saved param_groups (with this flag as it was saved): the
    session calls this again afterwards."""
    if not megatron_optimizer.USING_PYTORCH_OPTIMIZER:
        return
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        adam = getattr(inner, "optimizer", None)
        if not isinstance(adam, torch.optim.Adam | torch.optim.AdamW):
            continue
        for group in adam.param_groups:
            if group.get("foreach") is None and all(p.device.type == "cpu" for p in group["params"]):
                group["foreach"] = True


def _dtype(precision: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _make_distributed_optimizer_checkpoints_exact() -> None:
    """Fixes (a)-(d) of the module docstring on megatron's DistributedOptimizer class."""
    global _fix_applied
    with _fix_lock:
        if _fix_applied:
            return

        original_sharded_state_dict = DistributedOptimizer.sharded_state_dict
        original_set_states = DistributedOptimizer._set_main_param_and_optimizer_states
        original_load_state_dict = DistributedOptimizer.load_state_dict

        def sharded_state_dict(self, model_sharded_state_dict=None, is_loading=False, *args, **kwargs):
            if len(self.optimizer.state) == 0:  # (a)
                for group in self.optimizer.param_groups:
                    for parameter in group["params"]:
                        self.optimizer.state[parameter].update(
                            exp_avg=torch.zeros_like(parameter),
                            exp_avg_sq=torch.zeros_like(parameter),
                            step=torch.tensor(0.0),
                        )
            return original_sharded_state_dict(self, model_sharded_state_dict or {}, is_loading, *args, **kwargs)

        def set_main_param_and_optimizer_states(self, model_param, tensors):  # (b)
            current = self._get_main_param_and_optimizer_states(model_param)
            loaded = {key: value for key, value in tensors.items() if key != "step"}
            kept = {key: value for key, value in current.items() if key not in loaded}
            return original_set_states(self, model_param, {**kept, **loaded})

        def load_state_dict(self, state_dict):
            with torch.no_grad():  # (d)
                original_load_state_dict(self, state_dict)
            for state in self.optimizer.state.values():  # (c)
                if torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].clone()

        DistributedOptimizer.sharded_state_dict = sharded_state_dict
        DistributedOptimizer._set_main_param_and_optimizer_states = set_main_param_and_optimizer_states
        DistributedOptimizer.load_state_dict = load_state_dict
        _fix_applied = True
        log.info("distributed optimizer: torch AdamW checkpoint fixes applied (no TE/Apex optimizer)")


def distributed_optimizer_fixes_applied() -> bool:
    return _fix_applied


def optimizer_step_counters(optimizer) -> list[Any]:
    """The AdamW `step` tensors of every parameter state (tests check they are not shared)."""
    inner_optimizers = getattr(optimizer, "chained_optimizers", [optimizer])
    counters = []
    for inner in inner_optimizers:
        for state in inner.optimizer.state.values():
            if "step" in state:
                counters.append(state["step"])
    return counters
