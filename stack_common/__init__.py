"""Pieces both halves of the project share: the config error type and its check helpers, the Hydra
entry-point wrapper and logging set-up. Nothing here imports `beam_pipelines` or `megatron_recipes`."""
