"""Cases that need the CPU runtime layer installed in their process.

The layer changes process-wide state (a torch function mode, torch.cuda stand-ins), so these run
in a fresh `python -m pytest` subprocess started by test_cpu_runtime.py, never in the main test
process. The first case runs before the layer is installed.
"""

from __future__ import annotations

import math
import random

import megatron.core.distributed.param_and_grad_buffer as buffers
import numpy as np
import pytest
import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import get_cuda_rng_tracker, model_parallel_cuda_manual_seed
from megatron.core.transformer.torch_norm import WrappedTorchNorm

from megatron_recipes.config import register_configs
from megatron_recipes.runtime import cpu
from megatron_recipes.runtime.seeds import capture_rng_state, restore_rng_state
from megatron_recipes.training.checkpointing import (
    CheckpointError,
    latest_iteration,
    load_checkpoint,
    load_model_weights,
    read_checkpoint_info,
    resolve_checkpoint,
    save_checkpoint,
)
from megatron_recipes.training.loop import evaluate, forward_only, train_step
from megatron_recipes.training.optimizer import build_scheduler, learning_rate_at, optimizer_step_counters
from megatron_recipes.training.session import setup_training
from stack_common.cli import compose_config

BASE = [
    "model=tiny",
    "model.vocab_size=512",
    "data=mock",
    "data.seq_length=32",
    "trainer=cpu",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=2",
    "trainer.train_steps=10",
    "trainer.tensorboard=false",
    "optimizer.warmup_steps=2",
    "checkpoint.dir=null",
]


def compose(*overrides: str):
    return compose_config("pretrain", [*BASE, *overrides], register_configs)


def test_layer_refuses_a_machine_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(cpu.CudaOnCpuError):
        cpu.apply_cpu_runtime()
    assert not cpu.cpu_runtime_applied()


@pytest.fixture(scope="module")
def session():
    config = compose()
    return setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, vocab_size=512
    )


def test_cuda_device_requests_land_on_the_cpu(session):
    assert torch.zeros(3, device="cuda").device.type == "cpu"
    assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"
    assert torch.ones(2, device="cuda:0").device.type == "cpu"
    tensor = torch.arange(4.0)
    assert tensor.cuda() is tensor
    assert tensor.to("cuda").device.type == "cpu"
    assert tensor.type() == "torch.cuda.FloatTensor"  # megatron's clip_grads asserts this
    assert tensor.type("torch.cuda.DoubleTensor").dtype == torch.float64
    assert not torch.empty(2, pin_memory=True).is_pinned()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    end.record()
    assert start.elapsed_time(end) >= 0.0
    torch.cuda.synchronize()


def test_tracker_streams_keep_their_gpu_semantics(session):
    model_parallel_cuda_manual_seed(77)
    default_first = torch.rand(4)
    model_parallel_cuda_manual_seed(77)
    with get_cuda_rng_tracker().fork():
        forked = torch.rand(4)
    default_again = torch.rand(4)
    # A fork draws from its own stream and leaves the default stream where it was.
    assert torch.equal(default_first, default_again)
    assert not torch.equal(forked, default_first)
    model_parallel_cuda_manual_seed(77)
    with get_cuda_rng_tracker().fork():
        assert torch.equal(torch.rand(4), forked)


def test_captured_rng_state_replays_every_stream(session):
    state = capture_rng_state()

    def draw():
        with get_cuda_rng_tracker().fork():
            tracked = torch.rand(3)
        return torch.rand(3), tracked, random.random(), float(np.random.rand())

    first = draw()
    restore_rng_state(state)
    second = draw()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_torch_norm_accepts_sequence_parallel_and_marks_its_parameters(session):
    config = session.transformer_config
    saved = config.sequence_parallel
    config.sequence_parallel = True
    try:
        norm = WrappedTorchNorm(config, 8, eps=1e-6)
    finally:
        config.sequence_parallel = saved
    assert all(getattr(parameter, "sequence_parallel", False) for parameter in norm.parameters())


def _micro_batches(count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        tokens = torch.randint(0, 512, (2, 33), generator=generator)
        mask = torch.ones(2, 32)
        batches.append(
            {
                "tokens": tokens[:, :-1],
                "labels": tokens[:, 1:],
                "loss_mask": mask,
                "position_ids": torch.arange(32).expand(2, 32).clone(),
            }
        )
    return batches


def _plain_loss(session, batches) -> float:
    """The mean token loss of the whole batch by one direct forward of the unwrapped model."""
    model = session.unwrapped_model()[0]
    with torch.no_grad():
        losses = [model(b["tokens"], b["position_ids"], None, labels=b["labels"]) for b in batches]
    stacked = torch.cat([loss.flatten() for loss in losses])
    return float(stacked.mean())


def test_reported_loss_is_the_mean_over_all_micro_batches_not_divided_again(session):
    # Pitfall 2: megatron's schedule rescales the loss tensor in place; what is reported must be
    # the global-batch mean, not that divided by the number of micro-batches.

    batches = _micro_batches(session.num_microbatches)
    assert session.num_microbatches == 4
    expected = _plain_loss(session, batches)
    assert abs(evaluate(session, batches)["loss"] - expected) < 1e-5
    result = train_step(session, batches)
    assert abs(result.loss - expected) < 1e-5, (result.loss, expected)
    assert result.tokens == 8 * 32
    assert math.isfinite(result.grad_norm) and result.update_successful


def test_custom_loss_function_with_mask_and_metrics(session):
    # What SFT (masked prompts) and GRPO (own objective, extra metrics) plug in.

    batches = _micro_batches(4, seed=1)
    for batch in batches:
        batch["loss_mask"][:, :16] = 0.0

    def loss_fn(batch, per_token_loss):
        mask = batch["loss_mask"]
        low = ((per_token_loss < 6.0).float() * mask).sum()
        return (per_token_loss * mask).sum(), mask.sum().to(torch.int), {"below_6": torch.stack([low, mask.sum()])}

    log_probs = forward_only(session, batches, lambda batch, per_token_loss: -per_token_loss)
    assert len(log_probs) == 4 and log_probs[0].shape == (2, 32)
    # The same through bare model chunks (how a frozen reference model is used).
    bare = forward_only(session.unwrapped_model(), batches, lambda batch, per_token_loss: -per_token_loss)
    assert all(torch.equal(a, b) for a, b in zip(log_probs, bare))
    stacked = torch.cat([-lp[:, 16:].flatten() for lp in log_probs])
    reduced = evaluate(session, batches, loss_fn)
    assert abs(reduced["loss"] - float(stacked.mean())) < 1e-5
    assert abs(reduced["below_6"] - float((stacked < 6.0).float().mean())) < 1e-6


def test_schedules_follow_the_pure_definition():
    class Holder:
        param_groups = [{"params": [], "max_lr": 1e-3, "wd_mult": 1.0, "default_config": True}]

    for schedule in ("multistep", "cosine", "linear", "constant"):
        settings = compose(
            f"optimizer.lr_schedule={schedule}",
            "optimizer.lr=1e-3",
            "optimizer.warmup_steps=10",
            "trainer.train_steps=100",
        ).optimizer
        holder = Holder()
        scheduler = build_scheduler(holder, settings, train_steps=100)
        for step in range(0, 101):
            assert math.isclose(
                holder.param_groups[0]["lr"], learning_rate_at(step, settings, 100), rel_tol=1e-9, abs_tol=1e-15
            ), (schedule, step)
            scheduler.step(1)


def test_collectives_of_one_rank_return_at_once_and_others_still_run(session):
    # The layer returns a synchronous all-reduce over a group of one rank, and the grad buffers'
    # gather/scatter between a buffer and its only shard, at once (the identity); an asynchronous
    # call, or a gather between two different buffers, still runs the collective.
    group = parallel_state.get_data_parallel_group()
    assert torch.distributed.get_world_size(group) == 1
    values = torch.tensor([1.5, -2.0])
    assert torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX, group=group) is None
    assert values.tolist() == [1.5, -2.0]
    handle = torch.distributed.all_reduce(values, group=group, async_op=True)
    assert handle is not None and handle.wait() and values.tolist() == [1.5, -2.0]
    buffer = torch.arange(6.0)
    assert buffers.dist_all_gather_func(buffer, buffer[:6], group=group) is None
    assert buffers.dist_reduce_scatter_func(buffer[:6], buffer, group=group) is None
    assert buffer.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    output = torch.zeros(6)
    buffers.dist_all_gather_func(output, buffer, group=group)  # two buffers: gloo copies
    assert output.tolist() == buffer.tolist()


def test_foreach_adam_is_exact(session):
    # build_optimizer switches torch's AdamW over CPU parameters to its foreach implementation
    # (training/optimizer.use_foreach_adam): it must update exactly as the per-parameter loop
    # torch picks by default on the CPU, with megatron's parameter groups (decay and no decay).
    inner = [chained.optimizer for chained in getattr(session.optimizer, "chained_optimizers", [session.optimizer])]
    groups = [group for adam in inner for group in adam.param_groups]
    assert groups and all(group["foreach"] is True for group in groups)
    assert len({group["weight_decay"] for group in groups}) == 2
    generator = torch.Generator().manual_seed(4)
    results = []
    for foreach in (False, True):
        copies = [
            {
                **{key: value for key, value in group.items() if key not in ("params", "foreach")},
                "params": [torch.nn.Parameter(p.detach().clone()) for p in group["params"]],
                "foreach": foreach,
            }
            for group in groups
        ]
        adam = torch.optim.AdamW(copies)
        generator.manual_seed(4)
        for _ in range(5):
            for group in copies:
                for parameter in group["params"]:
                    parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-2
            adam.step()
        results.append([p.detach() for group in copies for p in group["params"]])
    loop, foreach = results
    assert all(torch.equal(a, b) for a, b in zip(loop, foreach))
    start = [p.detach() for group in groups for p in group["params"]]
    assert not all(torch.equal(a, b) for a, b in zip(start, foreach))  # the steps did move them


def test_weights_only_checkpoint_and_distributed_optimizer_state(session, tmp_path):
    # Pitfall 3: after loading, every parameter has its own Adam `step` holding the real count.

    steps_taken = int(optimizer_step_counters(session.optimizer)[0])
    assert steps_taken >= 1
    save_checkpoint(
        tmp_path / "full",
        7,
        session.model,
        session.optimizer,
        session.scheduler,
        train_state={"iteration": 7, "consumed_samples": 56},
    )
    save_checkpoint(tmp_path / "weights", 0, session.model)
    assert latest_iteration(tmp_path / "full") == 7
    assert read_checkpoint_info(tmp_path / "full")["train_state"]["consumed_samples"] == 56

    config = compose("trainer.seed=999")
    fresh = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        config.trainer,
        config.checkpoint,
        vocab_size=512,
        runtime=session.runtime,
    )
    source = dict(session.unwrapped_model()[0].named_parameters())
    target = dict(fresh.unwrapped_model()[0].named_parameters())
    assert not torch.equal(source["embedding.word_embeddings.weight"], target["embedding.word_embeddings.weight"])
    loaded = load_checkpoint(tmp_path / "full", fresh.model, fresh.optimizer, fresh.scheduler)
    assert loaded.iteration == 7 and loaded.rng_restored
    for name, parameter in source.items():
        assert torch.equal(parameter, target[name]), name
    counters = optimizer_step_counters(fresh.optimizer)
    assert len({id(counter) for counter in counters}) == len(counters) > 1
    assert {int(counter) for counter in counters} == {steps_taken}
    assert fresh.scheduler.num_steps == session.scheduler.num_steps

    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(tmp_path / "weights", fresh.model, fresh.optimizer)
    assert load_model_weights(tmp_path / "weights", fresh.model).iteration == 0


def test_an_incomplete_save_is_never_picked(session, tmp_path):
    save_checkpoint(tmp_path, 3, session.model)
    # A save that died half-way: its files exist under the staging name only.
    (tmp_path / "iter_0000006.incomplete").mkdir()
    (tmp_path / "iter_0000006.incomplete" / "common.pt").write_bytes(b"partial")
    assert latest_iteration(tmp_path) == 3
    assert resolve_checkpoint(tmp_path).name == "iter_0000003"
    save_checkpoint(tmp_path, 6, session.model, keep_last=1)
    assert resolve_checkpoint(tmp_path).name == "iter_0000006"
    assert not (tmp_path / "iter_0000003").exists() and not (tmp_path / "iter_0000006.incomplete").exists()
