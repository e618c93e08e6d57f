"""A checkpoint directory's layout and its readable record, without torch or megatron-core (the
layout itself is described in training/checkpointing.py, which writes and loads the checkpoints).

Checks that run before any process group read these: which iteration `latest` names, and what a
checkpoint recorded in checkpoint_info.json (its model config, its tokenizer), e.g. the Slurm
pre-check (launch/slurm/recipe_config.py) through data/model_tokenizer.py.
Cost: a few small file reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = "deepseekmath-megatron-v1"
LATEST_FILE = "latest"
INFO_FILE = "checkpoint_info.json"
INCOMPLETE_SUFFIX = ".incomplete"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the path and the reason."""


def iteration_directory(root: str | os.PathLike, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def latest_iteration(root: str | os.PathLike) -> int | None:
    """The iteration named by `<root>/latest`, or None when there is no complete checkpoint."""
    marker = Path(root) / LATEST_FILE
    if not marker.exists():
        return None
    text = marker.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{marker} does not hold an iteration number: {text[:40]!r}")
    return int(text)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory (via its `latest`) or an iter_* directory -> the checkpoint directory."""
    path = Path(path)
    if (path / "metadata.json").exists():
        return path
    iteration = latest_iteration(path) if path.is_dir() else None
    if iteration is None:
        raise CheckpointError(
            f"no checkpoint at {path}: neither a checkpoint directory nor a run directory with a `latest` file"
        )
    directory = iteration_directory(path, iteration)
    if not (directory / "metadata.json").exists():
        raise CheckpointError(f"{path}/latest names iteration {iteration} but {directory} is missing or incomplete")
    return directory


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The readable summary rank 0 wrote beside the checkpoint files (plain JSON)."""
    return json.loads((resolve_checkpoint(path) / INFO_FILE).read_text())
