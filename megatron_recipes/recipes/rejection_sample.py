"""The body of `python -m megatron_recipes.rejection_sample` (see that module for how to run it):
build the prompt stream, the generator and the acceptance scorer, let every data-parallel rank
sample its share (megatron_recipes/rejection/sampler.py), then add up the chunks' stats into the
summary on the first rank."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.data.rl_prompts import PromptStream
from megatron_recipes.generation.interface import build_generator
from megatron_recipes.rejection.sampler import RejectionSampler, make_scorer, write_summary
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool

log = logging.getLogger("rejection_sample")


def run_rejection_sampling(config) -> dict | None:
    """The whole run on this process (every rank of a torchrun launch calls it); the first rank
    returns the summary, the others None."""
    started = time.perf_counter()
    prompts = PromptStream(config.prompts, config.chat_template)
    generator_options = {k: v for k, v in asdict(config.generator).items() if k != "name"}
    generator = build_generator(config.generator.name, **generator_options)
    rank, ranks, tensor_rank = _parallel_position()
    settings = {
        "checkpoint": config.generator.checkpoint,
        "generations": config.generator.path,
        "prompts": asdict(config.prompts),
        "sampling": asdict(config.sampling),
        "acceptance": asdict(config.acceptance),
        "filters": asdict(config.filters),
        "data_parallel_size": ranks,
    }
    with DeadlineWorkerPool(config.answer_check.num_workers, config.answer_check.timeout_s) as pool:
        checker = AnswerChecker(config.answer_check.options(), pool=pool)
        sampler = RejectionSampler(
            config, prompts, generator, make_scorer(config, checker), rank, ranks, writes=tensor_rank == 0
        )
        if tensor_rank == 0:
            log.info(
                "rejection sampling: %d prompts x %d samples from %s on %d data-parallel rank(s) -> %s",
                sampler.total_prompts(),
                config.sampling.n,
                sampler.checkpoint,
                ranks,
                config.output_dir,
            )
        sampler.run()
    _barrier()
    if rank == 0 and tensor_rank == 0:
        summary = write_summary(config.output_dir, settings, time.perf_counter() - started)
        log.info(
            "kept %d of %d samples (%d prompts); dropped %s; summary %s",
            summary["kept"],
            summary["samples"],
            summary["prompts"],
            ", ".join(f"{reason} {count}" for reason, count in summary["dropped"].items() if count),
            Path(config.output_dir) / "summary.json",
        )
        return summary
    return None


def _parallel_position() -> tuple[int, int, int]:
    """(data-parallel rank, data-parallel size, tensor-parallel rank) of this process. The megatron
    generator set up the parallel state; a generator without a model (precomputed) launched by
    torchrun gets a plain gloo group, every process a data-parallel rank."""
    if not parallel_state.model_parallel_is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group("gloo")
            return dist.get_rank(), dist.get_world_size(), 0
        return 0, 1, 0
    return (
        parallel_state.get_data_parallel_rank(),
        parallel_state.get_data_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_rank(),
    )


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
