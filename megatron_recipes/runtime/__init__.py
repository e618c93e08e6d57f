"""Process set-up shared by every entry point (pretrain, sft, grpo, evaluate, convert).

- distributed.py: `initialize_runtime(device, parallelism, seed=1234, timeout_minutes=30) ->
  Runtime`: torch.distributed + megatron-core parallel groups from torchrun/srun/plain
  environments; on `device="cpu"` it first installs the CPU runtime layer (gloo).
  `shutdown_runtime(destroy_process_group=True)`, `launch_environment() -> LaunchEnvironment`,
  `resolve_device("auto"|"cuda"|"cpu")`.
- seeds.py: `set_seeds(seed)`, `capture_rng_state()`, `restore_rng_state(state)`.
- cpu.py: `apply_cpu_runtime()`, `cpu_runtime_applied()` (never on a CUDA machine).
- config.py: the `parallelism` section (`ParallelismConfig`), DEVICES and PRECISIONS; light, so
  that the config checks run before torch and megatron load with the other modules.
"""
