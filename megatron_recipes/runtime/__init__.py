"""Process set-up shared by every entry point (pretrain, sft, grpo, evaluate, convert).

Public API:
- `initialize_runtime(device, parallelism, seed=1234, timeout_minutes=30) -> Runtime`:
  torch.distributed + megatron-core parallel groups from torchrun/srun/plain environments; on
  `device="cpu"` it first installs the CPU runtime layer (gloo). See `distributed.py`.
- `shutdown_runtime(destroy_process_group=True)`.
- `launch_environment() -> LaunchEnvironment`, `resolve_device("auto"|"cuda"|"cpu")`.
- `set_seeds(seed)`, `capture_rng_state()`, `restore_rng_state(state)`: see `seeds.py`.
- `apply_cpu_runtime()`, `cpu_runtime_applied()`: see `cpu.py` (never on a CUDA machine).

- config.py: the `parallelism` section (`ParallelismConfig`), DEVICES and PRECISIONS.

Importing this package is cheap; torch and megatron load when these functions are called.
"""

from __future__ import annotations

from megatron_recipes.runtime.distributed import (
    LaunchEnvironment,
    Runtime,
    initialize_runtime,
    launch_environment,
    resolve_device,
    shutdown_runtime,
)

__all__ = [
    "LaunchEnvironment",
    "Runtime",
    "initialize_runtime",
    "launch_environment",
    "resolve_device",
    "shutdown_runtime",
]
