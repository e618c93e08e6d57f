"""Process groups for every entry point: torchrun, srun or a plain `python -m`, CUDA or CPU.

    runtime = initialize_runtime(trainer.device, parallelism, seed=trainer.seed)
    ...  # build models, train, evaluate, convert
    shutdown_runtime()

`initialize_runtime` reads who this process is from the launcher's environment
(`launch_environment`): torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; srun's
SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID with the first host of the step's node list as master
(when srun starts one task per GPU without torchrun); nothing at all = one process. On CUDA it
binds the local GPU and uses NCCL; with `device="cpu"` it installs the CPU runtime layer
(`runtime.cpu`) and uses gloo. Then it creates megatron-core's tensor / pipeline / data
parallel groups and seeds every generator the Megatron way (`runtime.seeds`).

Cost: a few collective set-up calls, independent of model and data size.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.cpu import apply_cpu_runtime
from megatron_recipes.runtime.seeds import set_seeds
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchEnvironment:
    """Who this process is, as the launcher said."""

    launcher: str  # torchrun | slurm | single
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list: 'gpu[003-005,9],cpu1' -> 'gpu003'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ConfigError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_environment(environ: Mapping[str, str] | None = None) -> LaunchEnvironment:
    """Read the launcher's variables (torchrun first: `srun torchrun` sets both kinds)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnvironment(
            launcher="torchrun",
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        # One port per job so that two jobs sharing a node do not collide.
        default_port = 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000
        return LaunchEnvironment(
            launcher="slurm",
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or default_port),
        )
    return LaunchEnvironment("single", 0, 1, 0, "127.0.0.1", _free_port())


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' where CUDA is available, else 'cpu'; 'cuda' without CUDA is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but torch sees no CUDA device (use trainer.device=cpu or auto)")
    if requested == "cpu" and torch.cuda.is_available():
        raise ConfigError(
            "trainer.device=cpu on a machine with CUDA: the CPU runtime layer is for CUDA-less machines"
            " (use trainer.device=cuda, or hide the GPUs with CUDA_VISIBLE_DEVICES=)"
        )
    if requested not in ("cuda", "cpu"):
        raise ConfigError(f"unknown device {requested!r}")
    return requested


@dataclass(frozen=True)
class Runtime:
    """The initialised process: its device and its place in the parallel layout."""

    device: str  # cuda | cpu
    backend: str  # nccl | gloo
    launch: LaunchEnvironment
    tensor_parallel_size: int
    pipeline_parallel_size: int
    virtual_pipeline_size: int | None
    data_parallel_size: int
    tensor_parallel_rank: int
    pipeline_parallel_rank: int
    data_parallel_rank: int

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_logging_rank(self) -> bool:
        """Rank 0 prints progress and writes TensorBoard/metrics files."""
        return self.launch.rank == 0

    def torch_device(self):
        return torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device("cpu")

    def layout(self) -> dict[str, int | None]:
        return {
            "tensor_parallel": self.tensor_parallel_size,
            "pipeline_parallel": self.pipeline_parallel_size,
            "virtual_pipeline": self.virtual_pipeline_size,
            "data_parallel": self.data_parallel_size,
        }


def initialize_runtime(
    device: str, parallelism: ParallelismConfig, seed: int = 1234, timeout_minutes: int = 30
) -> Runtime:
    """Start torch.distributed and megatron-core's parallel groups for this process.

    Idempotent within a process as long as the layout does not change; to switch layouts (tests
    do), call `shutdown_runtime()` first. Raises ConfigError on an impossible layout.
    """
    resolved = resolve_device(device)
    launch = launch_environment()
    tp = parallelism.tensor_model_parallel_size
    pp = parallelism.pipeline_model_parallel_size
    vp = parallelism.virtual_pipeline_model_parallel_size
    if parallelism.world_size is not None and parallelism.world_size != launch.world_size:
        raise ConfigError(
            f"parallelism.world_size={parallelism.world_size} but the launcher started {launch.world_size} processes"
        )
    if launch.world_size % (tp * pp):
        raise ConfigError(f"world size {launch.world_size} is not divisible by TP x PP = {tp}x{pp}")

    if resolved == "cpu":
        apply_cpu_runtime()
        backend = "gloo"
    else:
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        backend = "nccl"

    if not dist.is_initialized():
        os.environ.update(
            MASTER_ADDR=launch.master_addr,
            MASTER_PORT=str(launch.master_port),
            RANK=str(launch.rank),
            WORLD_SIZE=str(launch.world_size),
            LOCAL_RANK=str(launch.local_rank),
        )
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=timeout_minutes),
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            virtual_pipeline_model_parallel_size=vp if vp and vp > 1 else None,
            distributed_timeout_minutes=timeout_minutes,
        )
    runtime = Runtime(
        device=resolved,
        backend=backend,
        launch=launch,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        virtual_pipeline_size=vp if vp and vp > 1 else None,
        data_parallel_size=parallel_state.get_data_parallel_world_size(),
        tensor_parallel_rank=parallel_state.get_tensor_model_parallel_rank(),
        pipeline_parallel_rank=parallel_state.get_pipeline_model_parallel_rank(),
        data_parallel_rank=parallel_state.get_data_parallel_rank(),
    )
    set_seeds(seed)
    if runtime.is_logging_rank:
        log.info(
            "runtime: %s via %s, %d process(es), %s, launcher %s",
            resolved,
            backend,
            launch.world_size,
            " ".join(f"{k}={v}" for k, v in runtime.layout().items() if v is not None),
            launch.launcher,
        )
    return runtime


def shutdown_runtime(destroy_process_group: bool = True) -> None:
    """Tear down megatron's parallel groups (and the default group unless told otherwise)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if destroy_process_group and dist.is_initialized():
        dist.destroy_process_group()
