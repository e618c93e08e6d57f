"""The CPU runtime layer: megatron-core's CUDA calls served by the CPU, collectives over gloo.

megatron-core assumes a GPU in about 190 places (`torch.cuda.current_device()`, `device="cuda"`,
`.cuda()`, its "CUDA" RNG tracker, `torch.cuda.synchronize`, `torch.cuda.Event`, NVTX ranges).
`apply_cpu_runtime()` makes those calls run for real on the CPU so that the *unmodified*
megatron-core code paths (GPTModel, its DDP, the distributed optimizer, the pipeline schedules,
dist_checkpointing) train on a laptop or a CPU-only CI machine. It is applied once per process,
only when a run asks for `trainer.device=cpu`, and it refuses to run where CUDA is available:
on a GPU machine nothing here is ever touched.

What it does (each item is needed by a megatron-core path that the tests run):
- devices: a torch function mode rewrites `device="cuda"|"cuda:N"|N` to the CPU, makes
  `Tensor.cuda()` / `pin_memory()` no-ops and `pin_memory=True` false. The mode is the mechanism
  behind `torch.set_default_device`; it is installed on the calling thread (the main thread,
  where training runs) and costs about a microsecond per torch call.
- `Tensor.type()` reports `torch.cuda.FloatTensor` for CPU tensors: megatron's gradient clipping
  asserts that every gradient is a CUDA tensor.
- `torch.cuda.current_device/synchronize/Event` and NVTX: CPU stand-ins (CPU ops are synchronous).
- RNG: megatron's "CUDA" RNG tracker drives the CPU default generator, so tensor-parallel dropout
  seeds, `model_parallel_cuda_manual_seed` and the RNG replay of activation recompute keep their
  GPU semantics (forks swap the generator's state in and out).
- pipeline point-to-point: gloo pairs `isend`/`irecv` to one peer by (tag, order). The batched
  p2p path sends both directions to the same peer with tag 0 when the interleaved schedule runs
  on two stages, and gloo then silently swaps activations and gradients (wrong loss, no error).
  Each direction gets its own tag here.
- collectives over a group of one rank (data parallelism of size 1, the tensor-parallel group
  without tensor parallelism): a synchronous `all_reduce`, and the gradient buffers' param
  all-gather and grad reduce-scatter between a buffer and its only shard (the same memory),
  return at once. On one rank each is the identity, but gloo still copies and bookkeeps, about
  0.1-0.6 ms a call, several per training step (megatron's cross-entropy, grad norm, the
  distributed optimizer's gather, metrics); asynchronous calls (which must return a handle) run.
- the local spec's `WrappedTorchNorm` refuses sequence parallelism (only TE/Apex norms allow it);
  it is built anyway and its parameters are marked `sequence_parallel`, so `finalize_model_grads`
  all-reduces their gradients over the tensor-parallel group, as it does for TE's norm.

The distributed optimizer's checkpoint fixes for torch's Adam are not CPU-specific (a GPU
without TE/Apex needs them too): they live in `megatron_recipes.training.optimizer`.

Cost: a constant per torch call; nothing here grows with model or data size.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import megatron.core.distributed.param_and_grad_buffer as buffers
import megatron.core.pipeline_parallel.p2p_communication as p2p
import megatron.core.tensor_parallel.random as megatron_random
import torch
import torch.cuda.nvtx as nvtx
import torch.distributed as dist
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from torch.overrides import TorchFunctionMode, _get_current_function_mode, _pop_mode_temporarily

CPU = torch.device("cpu")
# The tensor methods the device mode rewrites even without keyword arguments.
_TO, _CUDA, _TYPE, _PIN_MEMORY = torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type, torch.Tensor.pin_memory

_lock = threading.Lock()
_applied = False
_device_mode: "CudaCallsOnCpu | None" = None


class CudaOnCpuError(RuntimeError):
    """The CPU runtime layer was asked for on a machine that has CUDA."""


def _names_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # megatron passes bare indices (`device=torch.cuda.current_device()` on a GPU is an int).
    return isinstance(device, int) and not isinstance(device, bool)


class CudaCallsOnCpu(TorchFunctionMode):
    """Rewrites every torch call that names a CUDA device so that it runs on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not kwargs:
            # Most calls (the model's arithmetic) name no device: straight through.
            if not (func is _TO or func is _CUDA or func is _TYPE or func is _PIN_MEMORY):
                return func(*args)
            kwargs = {}
        if func is torch.Tensor.cuda or func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.type:
            if len(args) == 1 and not kwargs:
                # clip_grads.py asserts `grad.type() == 'torch.cuda.FloatTensor'`.
                return func(*args).replace("torch.", "torch.cuda.", 1)
            if len(args) > 1 and isinstance(args[1], str):
                args = (args[0], args[1].replace("torch.cuda.", "torch.", 1), *args[2:])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        device = kwargs.get("device")
        if device is not None and _names_cuda(device):
            kwargs["device"] = CPU
        elif func is torch.Tensor.to and len(args) > 1 and _names_cuda(args[1]):
            args = (args[0], CPU, *args[2:])
        return func(*args, **kwargs)


class CpuEvent:
    """`torch.cuda.Event` stand-in: records wall time, so elapsed_time() stays meaningful."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self._time: float | None = None

    def record(self, stream: Any = None) -> None:
        self._time = time.perf_counter()

    def elapsed_time(self, end_event: "CpuEvent") -> float:
        if self._time is None or end_event._time is None:
            raise RuntimeError("both events must be recorded before elapsed_time()")
        return (end_event._time - self._time) * 1000.0

    def synchronize(self) -> None:
        return None

    def wait(self, stream: Any = None) -> None:
        return None

    def query(self) -> bool:
        return True


def _serve_torch_cuda_from_cpu() -> None:
    torch.cuda.current_device = lambda: CPU
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.Event = CpuEvent
    nvtx.range_push = lambda *args, **kwargs: None
    nvtx.range_pop = lambda *args, **kwargs: None
    nvtx.mark = lambda *args, **kwargs: None
    nvtx.range = lambda *args, **kwargs: contextlib.nullcontext()


class _DropExpectedForkWarning(logging.Filter):
    # The tracker warns when the CPU generator advanced inside a fork: on the CPU the "CUDA"
    # generator *is* the CPU one, so that is the expected behaviour, not a bug.
    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed" not in record.getMessage()


def _serve_cuda_rng_from_cpu_generator() -> None:
    def get_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        return torch.get_rng_state()

    def set_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    def manual_seed(seed: int) -> None:
        torch.default_generator.manual_seed(int(seed))

    torch.cuda.get_rng_state = get_state
    torch.cuda.set_rng_state = set_state
    torch.cuda.manual_seed = manual_seed
    torch.cuda.manual_seed_all = manual_seed
    torch.cuda.random.get_rng_state = get_state
    torch.cuda.random.set_rng_state = set_state
    megatron_random._get_cuda_rng_state = get_state
    megatron_random._set_cuda_rng_state = set_state
    logging.getLogger(megatron_random.__name__).addFilter(_DropExpectedForkWarning())


# Tags of the two directions of pipeline traffic: activations flow to the next stage,
# gradients to the previous one. Any two distinct values work; gloo only compares them.
ACTIVATION_TAG = 1
GRADIENT_TAG = 2


def batched_p2p_ops_with_direction_tags(
    *,
    tensor_send_prev: torch.Tensor | None,
    tensor_recv_prev: torch.Tensor | None,
    tensor_send_next: torch.Tensor | None,
    tensor_recv_next: torch.Tensor | None,
    group: "torch.distributed.ProcessGroup",
    prev_pipeline_rank: int,
    next_pipeline_rank: int,
) -> list:
    """megatron's `_batched_p2p_ops`, with a tag per direction (see the module docstring)."""
    planned = (
        (dist.isend, tensor_send_prev, prev_pipeline_rank, GRADIENT_TAG),
        (dist.irecv, tensor_recv_prev, prev_pipeline_rank, ACTIVATION_TAG),
        (dist.isend, tensor_send_next, next_pipeline_rank, ACTIVATION_TAG),
        (dist.irecv, tensor_recv_next, next_pipeline_rank, GRADIENT_TAG),
    )
    operations = [dist.P2POp(op, tensor, peer, group, tag) for op, tensor, peer, tag in planned if tensor is not None]
    return dist.batch_isend_irecv(operations) if operations else []


# megatron's own function, kept so that tests can show what the tags fix.
untagged_batched_p2p_ops = None


def _tag_pipeline_directions() -> None:
    global untagged_batched_p2p_ops

    untagged_batched_p2p_ops = p2p._batched_p2p_ops
    p2p._batched_p2p_ops = batched_p2p_ops_with_direction_tags


def _allow_sequence_parallel_torch_norm() -> None:
    original_new = WrappedTorchNorm.__new__

    def build_norm(cls, config, hidden_size, eps=1e-5, **kwargs):
        sequence_parallel = config.sequence_parallel
        config.sequence_parallel = False  # only for the constructor's refusal check
        try:
            norm = original_new(cls, config, hidden_size, eps, **kwargs)
        finally:
            config.sequence_parallel = sequence_parallel
        for parameter in norm.parameters():
            parameter.sequence_parallel = sequence_parallel
        return norm

    WrappedTorchNorm.__new__ = staticmethod(build_norm)


def _alone(group) -> bool:
    return dist.get_world_size(group) == 1


def _skip_single_rank_collectives() -> None:
    all_reduce = dist.all_reduce

    def all_reduce_unless_alone(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if not async_op and _alone(group):
            return None  # every reduction of one rank's tensor is that tensor
        return all_reduce(tensor, op=op, group=group, async_op=async_op)

    dist.all_reduce = all_reduce_unless_alone
    gather, scatter = buffers.dist_all_gather_func, buffers.dist_reduce_scatter_func

    def one_buffer(first: torch.Tensor, second: torch.Tensor) -> bool:
        return first.data_ptr() == second.data_ptr() and first.numel() == second.numel() and first.dtype == second.dtype

    def all_gather_unless_alone(output, input, group=None, async_op=False):
        if not async_op and _alone(group) and one_buffer(output, input):
            return None
        return gather(output, input, group=group, async_op=async_op)

    def reduce_scatter_unless_alone(output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if not async_op and _alone(group) and one_buffer(output, input):
            return None
        return scatter(output, input, op=op, group=group, async_op=async_op)

    buffers.dist_all_gather_func = all_gather_unless_alone
    buffers.dist_reduce_scatter_func = reduce_scatter_unless_alone


def apply_cpu_runtime() -> None:
    """Install the layer in this process (idempotent; call before building any model).

    Raises CudaOnCpuError on a machine with CUDA: there the real CUDA paths must run.
    """
    global _applied, _device_mode
    with _lock:
        if _applied:
            return
        if torch.cuda.is_available():
            raise CudaOnCpuError("the CPU runtime layer is for machines without CUDA; use trainer.device=cuda here")
        _serve_torch_cuda_from_cpu()
        _serve_cuda_rng_from_cpu_generator()
        _tag_pipeline_directions()
        _allow_sequence_parallel_torch_norm()
        _skip_single_rank_collectives()
        _device_mode = CudaCallsOnCpu()
        _device_mode.__enter__()
        _applied = True


def cpu_runtime_applied() -> bool:
    return _applied


@contextlib.contextmanager
def device_rewrites_suspended(enabled: bool = True):
    """Run the block without the device-rewriting torch function mode (when it is the innermost
    mode of this thread): for code of our own that names no CUDA device, such as the generator's
    cached decoder, whose hundreds of small torch calls per token would each pay the mode's
    Python dispatch. A no-op when the layer is not installed or `enabled` is false."""
    if not enabled or _device_mode is None or _get_current_function_mode() is not _device_mode:
        yield
        return
    with _pop_mode_temporarily():
        yield
