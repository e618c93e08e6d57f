"""Evaluate a model on a math, multiple-choice or code benchmark, or on a whole suite of them:
accuracy / pass@1, pass@k, cons@k, per subject / level / language; a JSON result file, a readable
table, and per-problem records. Benchmarks are read from local files in their public layouts
(evaluation/datasets.py lists them; README "Evaluation" says how to lay them out).

One benchmark, generations from any model as JSONL (CHAMP ships with the champ-dataset package):

    python -m megatron_recipes.evaluate generator.path=gens.jsonl
    python -m megatron_recipes.evaluate dataset=gsm8k dataset.path=/data/gsm8k/test.jsonl \\
        prompt_style=gsm8k_cot_8shot generator.path=gens.jsonl
    python -m megatron_recipes.evaluate dataset=aime dataset.path=/data/aime_2024 prompt_style=r1 \\
        sampling.n=64 sampling.temperature=0.6 sampling.top_p=0.95 'k_values=[1,64]' generator.path=gens.jsonl
    python -m megatron_recipes.evaluate dataset=math dataset.path=/data/MATH/test prompt_style=math_cot_4shot \\
        exemplars=/data/prompts/minerva_math_4shot.txt generator.path=gens.jsonl   # a published prompt, verbatim

A generations file has one line per problem: {"id": "<problem id>", "generations": ["...", ...]}
(ids as in records.jsonl of any run; see generation/interface.py for the other accepted forms).
The prompts of a style are written to records.jsonl, so an external engine can generate from them.

A checkpoint of these recipes (pretrain, SFT, GRPO) is sampled directly with the megatron-core
KV-cache generator; its model config and tokenizer are read from the checkpoint:

    python -m megatron_recipes.evaluate generator=megatron generator.checkpoint=outputs/grpo/tiny_cpu/checkpoints
    torchrun --nproc-per-node 4 -m megatron_recipes.evaluate generator=megatron generator.checkpoint=... \\
        generator.tensor_model_parallel_size=2     # 2 data-parallel x 2 tensor-parallel; rank 0 writes

A suite: every benchmark of the suite whose files are present, on each checkpoint, one table
(suite.md / suite.json / suite.html, rows = checkpoints, columns = benchmarks):

    python -m megatron_recipes.evaluate suite=deepseekmath generator=megatron \\
        suite.benchmarks_dir=/data/benchmarks 'suite.checkpoints=[runs/base/checkpoints,runs/sft/checkpoints]'
    python -m megatron_recipes.evaluate suite=r1 generator=megatron suite.benchmarks_dir=/data/benchmarks \\
        'suite.checkpoints=[runs/r1/checkpoints]'
    python -m megatron_recipes.evaluate +experiment=chain_suite suite.chain_dir=outputs/chain   # base / SFT / GRPO

On a cluster: the same command inside an sbatch script (srun/torchrun; one process per GPU).
A killed evaluation resumes when the same command is run again (harness.resume, harness.py).
Outputs: <output_dir>/results.json, records.jsonl, table.md (the table also in the log).

Cost: dominated by generation; checking is ~thousands of answers per second per core; programs
and code tests run in the sandbox, sandbox.max_workers at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, replace
from typing import Iterator

from megatron_recipes.config import EvaluateConfig, register_configs
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
from stack_common.cli import hydra_entry_point
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


# A precomputed generations file without a problem's generations raises KeyError: a bad input.
@hydra_entry_point("evaluate", register_configs, user_errors=(KeyError,))
def main(config: EvaluateConfig) -> None:
    evaluate(config)


if __name__ == "__main__":
    main()
