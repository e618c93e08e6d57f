"""Dataclass schemas of the training, post-training and evaluation recipes, registered in Hydra's
ConfigStore. All defaults live here (DESIGN.md convention 6); YAML files under `conf/` pick
presets (`model: deepseek_math_7b`, `parallelism: tp2`, ...) and experiments.

Every schema has `validate()`; the CLI (`beam_pipelines.cli.hydra_entry_point`) runs it after
composition and before any process group or model exists, so a bad value fails with one line.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from beam_pipelines.config import ConfigError  # one error type for every config problem

__all__ = ["ConfigError", "register_configs"]


def register_configs() -> None:
    """Register every schema (idempotent). Group YAML files name them in their defaults lists."""
    ConfigStore.instance()
