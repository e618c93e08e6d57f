"""Compose and validate a training recipe's config exactly as its entry point will, for the
Slurm scripts (launch/slurm/common.sh runs this before queueing and again inside the job).

    python launch/slurm/recipe_config.py pretrain [hydra overrides...]

Prints shell assignments for `eval` (values quoted): RECIPE_MODULE (python -m target),
RECIPE_ARGS (an array: the overrides to pass on, with `trainer.output_dir=$OUTPUT_DIR` first
when the OUTPUT_DIR knob is set), OUTPUT_DIR and CHECKPOINT_DIR (absolute; CHECKPOINT_DIR is
empty for recipes without checkpoints, e.g. evaluate), STOP_SIGNALS (the signals the trainer
turns into checkpoint-and-exit) and STOP_EXIT_CODE.

JOB_WORLD_SIZE (set by common.sh) is the number of ranks the job starts: the parallel layout
(TP x PP, batch sizes) is checked against it.

A bad override, an unknown recipe, or (pretrain, unless CHECK_DATA=0) a data mixture whose
files are missing or were tokenized with another tokenizer than the run's: one line
`error: ...` on stderr and exit status 2, before anything is queued.
Cost: one Hydra composition (well under a second) plus reading the index header and the summary
of every dataset of the mixture, and hashing the tokenizer file.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path

# Runnable as a plain script from any directory: the checkout this file lives in comes first.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from megatron_recipes.config import register_configs  # noqa: E402
from megatron_recipes.data.mixture import plan_pretraining_data  # noqa: E402
from stack_common.cli import USER_FACING_ERRORS, compose_config, conf_dir, exit_with_error, one_line, overrides_only  # noqa: E402
from stack_common.errors import ConfigError  # noqa: E402


def output_key(config) -> str | None:
    """Where the recipe writes: trainer.output_dir (training recipes) or output_dir (evaluate)."""
    trainer = getattr(config, "trainer", None)
    if trainer is not None and hasattr(trainer, "output_dir"):
        return "trainer.output_dir"
    if hasattr(config, "output_dir"):
        return "output_dir"
    return None


def output_dir_of(config) -> str:
    trainer = getattr(config, "trainer", None)
    return str(getattr(trainer, "output_dir", None) or getattr(config, "output_dir", "") or "")


def check_pretraining_data(config) -> None:
    """The first thing a pretraining job would trip on after hours in the queue: its data and
    tokenizer (missing files, a vocabulary too small, datasets made by another tokenizer)."""
    plan_pretraining_data(config)


def resolve(recipe: str, arguments: list[str]) -> dict[str, object]:
    module = f"megatron_recipes.{recipe}"
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{module} is not in this checkout (recipes: pretrain, sft, grpo, evaluate)")
    if not (Path(conf_dir()) / f"{recipe}.yaml").exists():
        raise ConfigError(f"conf/{recipe}.yaml is not in this checkout")
    world_size = os.environ.get("JOB_WORLD_SIZE")
    if world_size:
        # Validate the parallel layout against the ranks the job will start, not this process.
        os.environ["WORLD_SIZE"] = world_size
    overrides = overrides_only(arguments)
    if overrides is None:  # sweeps, --help, another config: the entry point handles them itself
        return {
            "RECIPE_MODULE": module,
            "RECIPE_ARGS": arguments,
            "OUTPUT_DIR": "",
            "CHECKPOINT_DIR": "",
            "STOP_SIGNALS": "",
            "STOP_EXIT_CODE": "",
        }
    config = compose_config(recipe, overrides, register_configs)
    passed_on = list(arguments)
    requested_output = os.environ.get("OUTPUT_DIR", "")
    if requested_output:
        key = output_key(config)
        if key is None:
            raise ConfigError(f"OUTPUT_DIR is set but the {recipe} config has no output directory")
        # First, so that an explicit override on the command line still wins.
        passed_on.insert(0, f"{key}={requested_output}")
        config = compose_config(recipe, [passed_on[0], *overrides], register_configs)
    if recipe == "pretrain" and os.environ.get("CHECK_DATA", "1") != "0":
        check_pretraining_data(config)
    trainer = getattr(config, "trainer", None)
    checkpoint = getattr(config, "checkpoint", None)
    checkpoint_dir = getattr(checkpoint, "dir", None) or ""
    handles_signals = trainer is not None and getattr(trainer, "exit_signal_handler", False)
    return {
        "RECIPE_MODULE": module,
        "RECIPE_ARGS": passed_on,
        "OUTPUT_DIR": os.path.abspath(output_dir_of(config)) if output_dir_of(config) else "",
        "CHECKPOINT_DIR": os.path.abspath(checkpoint_dir) if checkpoint_dir else "",
        "STOP_SIGNALS": ",".join(trainer.exit_signals) if handles_signals else "",
        "STOP_EXIT_CODE": str(getattr(trainer, "signal_exit_code", "")) if trainer is not None else "",
    }


def shell_assignments(values: dict[str, object]) -> str:
    lines = []
    for name, value in values.items():
        if isinstance(value, list):
            lines.append(f"{name}=({' '.join(shlex.quote(item) for item in value)})")
        else:
            lines.append(f"{name}={shlex.quote(str(value))}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if not argv:
        exit_with_error("usage: recipe_config.py RECIPE [hydra overrides...]")
    try:
        values = resolve(argv[0], argv[1:])
    except USER_FACING_ERRORS as error:
        exit_with_error(one_line(error))
    print(shell_assignments(values))


if __name__ == "__main__":
    main(sys.argv[1:])
