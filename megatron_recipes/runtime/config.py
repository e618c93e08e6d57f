"""The `parallelism` section (how the model and the batch are split over processes) and the device
and precision names that training and generation share. Checked before any process group exists:
the world size comes from the launcher's environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stack_common.checks import require_positive
from stack_common.errors import ConfigError

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def launcher_world_size() -> int:
    """Number of processes the launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS), 1 if
    none. Read from the environment only, so configs are checked before any process group."""
    for variable in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(variable)
        if value and value.isdigit():
            return int(value)
    return 1


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
        require_positive("parallelism.tensor_model_parallel_size", tp)
        require_positive("parallelism.pipeline_model_parallel_size", pp)
        if vp is not None:
            require_positive("parallelism.virtual_pipeline_model_parallel_size", vp)
        world = self.world_size if self.world_size is not None else launcher_world_size()
        if world % (tp * pp):
            raise ConfigError(
                f"world size {world} is not divisible by tensor_model_parallel_size x pipeline_model_parallel_size = "
                f"{tp}x{pp}"
            )
        if vp is not None and vp > 1 and pp == 1:
            raise ConfigError("parallelism.virtual_pipeline_model_parallel_size needs pipeline_model_parallel_size > 1")
        if self.sequence_parallel and tp == 1:
            raise ConfigError("parallelism.sequence_parallel=true needs tensor_model_parallel_size > 1")
        if self.overlap_param_gather and not self.use_distributed_optimizer:
            raise ConfigError("parallelism.overlap_param_gather=true needs use_distributed_optimizer=true")
