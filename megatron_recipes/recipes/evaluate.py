"""The body of `python -m megatron_recipes.evaluate` (megatron_recipes/evaluate.py has the usage):
the scoring tools, the generator and one benchmark run or a suite."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, replace
from typing import Iterator

from megatron_recipes.config import EvaluateConfig
from megatron_recipes.evaluation.datasets import load_problems
from megatron_recipes.evaluation.harness import BenchmarkRun, file_identity, format_table, run_benchmark, write_report
from megatron_recipes.evaluation.prompts import get_prompt_style, load_exemplars
from megatron_recipes.evaluation.scoring import ScoringTools
from megatron_recipes.evaluation.suite import run_suite
from megatron_recipes.generation.interface import build_generator
from megatron_recipes.rewards.equivalence import AnswerChecker
from megatron_recipes.rewards.worker_pool import DeadlineWorkerPool
from megatron_recipes.sandbox.executor import SandboxPool
from megatron_recipes.training.checkpointing import CheckpointError, resolve_checkpoint
from stack_common.errors import ConfigError

log = logging.getLogger("megatron_recipes.evaluate")


@contextlib.contextmanager
def scoring_tools(config: EvaluateConfig) -> Iterator[tuple[ScoringTools, DeadlineWorkerPool]]:
    """The answer checker's worker pool and the sandboxes (programs; code tests with the judge's
    wall limit), closed at the end."""
    # The judge runs every test of a sample; each test has its own CPU limit inside it.
    code_limits = replace(
        config.sandbox.limits(),
        wall_seconds=config.harness.code_wall_seconds,
        cpu_seconds=max(config.sandbox.cpu_seconds, math.ceil(config.harness.code_wall_seconds)),
    )
    with (
        DeadlineWorkerPool(config.answer_check.num_workers, config.answer_check.timeout_s) as pool,
        SandboxPool(config.sandbox.max_workers, config.sandbox.limits()) as sandbox,
        SandboxPool(config.sandbox.max_workers, code_limits) as code_sandbox,
    ):
        checker = AnswerChecker(config.answer_check.options(), pool=pool)
        yield ScoringTools(checker, sandbox, code_sandbox, config.harness.code_time_limit_s), pool


def generator_identity(config: EvaluateConfig) -> dict:
    """What the generations come from, for resumption: a resumed run must use the same model."""
    if config.generator.name == "precomputed":
        return {"generator": "precomputed", **file_identity(config.generator.path)}
    try:
        checkpoint = str(resolve_checkpoint(config.generator.checkpoint))
    except (CheckpointError, FileNotFoundError) as error:
        raise ConfigError(f"generator.checkpoint: {error}") from None
    return {"generator": config.generator.name, "checkpoint": checkpoint}


def evaluate(config: EvaluateConfig) -> dict | None:
    """Run one evaluation (or a suite) from a typed config; returns the summary metrics (the
    suite's table), None on ranks that do not write."""
    output_dir = config.resolved_output_dir()
    with scoring_tools(config) as (tools, pool):
        if config.suite.active():
            return run_suite(replace(config, output_dir=output_dir), tools)
        dataset = config.dataset
        problems = load_problems(
            dataset.name,
            dataset.path,
            dataset.limit,
            dataset.subjects,
            dataset.levels,
            choice_seed=dataset.choice_seed,
            date_from=dataset.date_from,
            date_to=dataset.date_to,
        )
        if not problems:
            raise ConfigError(f"dataset={dataset.name}: no problems left after the filters")
        style = get_prompt_style(config.prompt_style)
        exemplars = load_exemplars(config.exemplars) if config.exemplars else None
        log.info(
            "evaluate: %d problems from %s, prompt %s, generator %s",
            len(problems),
            dataset.name,
            config.prompt_style,
            config.generator.name,
        )
        generator = build_generator(
            config.generator.name, **{k: v for k, v in asdict(config.generator).items() if k != "name"}
        )
        identity = generator_identity(config)  # after the build: a missing file or checkpoint is its one-line error
        run = BenchmarkRun(dataset.name, problems, style, config.sampling, config.k_values, exemplars)
        report = run_benchmark(run, generator, tools, config.harness, output_dir, identity)
        if report is None:  # another rank writes
            return None
        report.summary["symbolic_checks"] = pool.stats.tasks
        report.summary["symbolic_timeouts"] = pool.stats.timeouts
    title = f"{dataset.name} / {config.prompt_style} / {config.generator.name}"
    paths = write_report(report, output_dir, config=asdict(config), title=title)
    log.info("%s", format_table(report, title))
    log.info("evaluate: wrote %s, %s, %s", paths["results"], paths["records"], paths["table"])
    return report.summary
