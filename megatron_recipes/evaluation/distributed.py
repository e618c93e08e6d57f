"""Where this process sits when a distributed generator (generator=megatron under torchrun) runs
the evaluation: data-parallel ranks take turns over the chunks of problems, the ranks of one
tensor-parallel group generate the same chunk together and only its first rank scores and writes.

    current_layout() -> Layout(data_parallel_rank, data_parallel_size, writer, rank, world_size)
    barrier(layout); share_from_writer(value, layout): the writer's value on every rank of its
    tensor-parallel group (tool-integrated runs execute code once and feed every rank the same
    output, so the group's contexts can never diverge)

torch is looked up in sys.modules, never imported here: an evaluation of precomputed generations
runs without it.

Cost: a barrier per benchmark, one small broadcast per tool step under tensor parallelism.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    data_parallel_rank: int = 0
    data_parallel_size: int = 1
    writer: bool = True  # the first rank of its tensor-parallel group
    rank: int = 0
    world_size: int = 1
    tensor_parallel_size: int = 1


def _initialized_torch_distributed():
    module = sys.modules.get("torch.distributed")
    if module is None or not module.is_available() or not module.is_initialized():
        return None
    return module


def current_layout() -> Layout:
    dist = _initialized_torch_distributed()
    if dist is None:
        return Layout()
    parallel_state = sys.modules.get("megatron.core.parallel_state")
    rank, world = dist.get_rank(), dist.get_world_size()
    if parallel_state is None or not parallel_state.model_parallel_is_initialized():
        return Layout(rank, world, True, rank, world)
    return Layout(
        parallel_state.get_data_parallel_rank(),
        parallel_state.get_data_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_rank() == 0,
        rank,
        world,
        parallel_state.get_tensor_model_parallel_world_size(),
    )


def barrier(layout: Layout) -> None:
    dist = _initialized_torch_distributed()
    if dist is not None and layout.world_size > 1:
        dist.barrier()


def share_from_writer(value: Any, layout: Layout) -> Any:
    """`value` as computed on the writer rank of this tensor-parallel group, on every rank of it."""
    if layout.tensor_parallel_size <= 1:
        return value
    dist = _initialized_torch_distributed()
    parallel_state = sys.modules["megatron.core.parallel_state"]
    holder = [value]
    dist.broadcast_object_list(
        holder,
        src=parallel_state.get_tensor_model_parallel_src_rank(),
        group=parallel_state.get_tensor_model_parallel_group(),
    )
    return holder[0]
