"""Seeds and the state of every random generator a training step draws from.

`set_seeds(seed)` follows Megatron-LM: each pipeline stage offsets the seed by 100 x its rank
(stages hold different layers), and megatron's RNG tracker derives the tensor-parallel streams
(dropout inside TP regions differs per TP rank, outside it is shared). `capture_rng_state()` /
`restore_rng_state()` snapshot all of them (Python, NumPy, torch CPU, CUDA, the tracker's
named streams) so that a resumed run draws exactly what the uninterrupted one would have.

Note that a model initialised from a seed is *not* the same model at different pipeline
layouts: each stage draws its layers' weights from its own stream. Compare layouts by loading
one checkpoint, never by seeding alike.

Cost: constant.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import get_cuda_rng_tracker, model_parallel_cuda_manual_seed

from megatron_recipes.runtime.cpu import cpu_runtime_applied


def set_seeds(seed: int) -> None:
    """Seed every generator of this rank (call after the parallel groups exist)."""
    rank_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(rank_seed)
    np.random.seed(rank_seed % (2**32))
    torch.manual_seed(rank_seed)
    model_parallel_cuda_manual_seed(rank_seed)


def _has_real_cuda() -> bool:
    return torch.cuda.is_available() and not cpu_runtime_applied()


def _numpy_state_as_tensors() -> dict[str, Any]:
    # Plain tensors and numbers only: checkpoints are read with torch.load(weights_only=True).
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _restore_numpy_state(state: dict[str, Any]) -> None:
    np.random.set_state(
        (
            state["kind"],
            state["keys"].numpy().astype(np.uint32),
            state["position"],
            state["has_gauss"],
            state["cached_gaussian"],
        )
    )


def capture_rng_state() -> dict[str, Any]:
    """Every generator's state on this rank (tensors on the CPU, safe to pickle)."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state_as_tensors(),
        "torch_cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state().cpu() if _has_real_cuda() else None,
        "tracker": {name: state.clone().cpu() for name, state in get_cuda_rng_tracker().get_states().items()},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    _restore_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch_cpu"])
    if state.get("cuda") is not None and _has_real_cuda():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states({name: tensor.clone() for name, tensor in state["tracker"].items()})
