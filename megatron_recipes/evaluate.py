"""Evaluate a model's generations on GSM8K, MATH or CHAMP: accuracy, per subject and level,
pass@k and maj@k; a JSON result file, a readable table, and per-problem records.

Locally (CHAMP ships with the champ-dataset package; generations from any model, as JSONL):

    python -m megatron_recipes.evaluate generator.path=gens.jsonl
    python -m megatron_recipes.evaluate dataset=gsm8k dataset.path=/data/gsm8k/test.jsonl \\
        prompt_style=gsm8k_cot_8shot generator.path=gens.jsonl
    python -m megatron_recipes.evaluate dataset=math dataset.path=/data/MATH/test \\
        prompt_style=math_cot_4shot sampling.n=16 'k_values=[1,4,16]' generator.path=gens.jsonl
    python -m megatron_recipes.evaluate prompt_style=program_of_thought generator.path=pot.jsonl

A generations file has one line per problem: {"id": "<problem id>", "generations": ["...", ...]}
(ids as in records.jsonl of any run; see generation/interface.py for the other accepted forms).
The prompts of a style are written to records.jsonl, so an external engine can generate from them.

A checkpoint of these recipes (pretrain, SFT, GRPO) is scored directly with the megatron-core
KV-cache generator; its model config and tokenizer are read from the checkpoint:

    python -m megatron_recipes.evaluate generator=megatron generator.checkpoint=outputs/grpo/tiny_cpu/checkpoints
    torchrun --nproc-per-node 2 -m megatron_recipes.evaluate generator=megatron generator.checkpoint=... \
        generator.tensor_model_parallel_size=2          # rank 0 writes the report

On a cluster: the same command inside an sbatch script (srun/torchrun, one process per GPU of
the tensor-parallel group).
Outputs: <output_dir>/results.json, records.jsonl, table.md (the table also on stdout).

Cost: dominated by generation; checking is ~thousands of answers per second per core.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from megatron_recipes.config import EvaluateConfig, register_configs
from megatron_recipes.evaluation.datasets import load_problems
from megatron_recipes.evaluation.harness import format_table, run_evaluation, write_report
from megatron_recipes.evaluation.prompts import get_prompt_style
from megatron_recipes.generation.interface import SamplingParams, build_generator
from megatron_recipes.rewards.equivalence import AnswerChecker
from megatron_recipes.rewards.worker_pool import DeadlineWorkerPool
from megatron_recipes.sandbox import SandboxPool
from stack_common.cli import hydra_entry_point
from stack_common.logs import process_rank

log = logging.getLogger("megatron_recipes.evaluate")


def evaluate(config: EvaluateConfig) -> dict:
    """Run one evaluation from a typed config; returns the summary metrics."""
    problems = load_problems(
        config.dataset.name, config.dataset.path, config.dataset.limit, config.dataset.subjects, config.dataset.levels
    )
    log.info(
        "evaluate: %d problems from %s, prompt %s, generator %s",
        len(problems),
        config.dataset.name,
        config.prompt_style,
        config.generator.name,
    )
    generator = build_generator(
        config.generator.name, **{k: v for k, v in asdict(config.generator).items() if k != "name"}
    )
    style = get_prompt_style(config.prompt_style)
    sampling = config.sampling
    params = SamplingParams(
        sampling.temperature, sampling.top_p, sampling.max_new_tokens, tuple(sampling.stop), sampling.n, sampling.seed
    )
    sandbox = None
    with DeadlineWorkerPool(config.answer_check.num_workers, config.answer_check.timeout_s) as pool:
        checker = AnswerChecker(config.answer_check.options(), pool=pool)
        try:
            if style.program_of_thought:
                sandbox = SandboxPool(config.sandbox.max_workers, config.sandbox.limits())
            report = run_evaluation(problems, generator, style, params, checker, sandbox, config.k_values)
        finally:
            if sandbox is not None:
                sandbox.close()
        report.summary["symbolic_checks"] = pool.stats.tasks
        report.summary["symbolic_timeouts"] = pool.stats.timeouts
    title = f"{config.dataset.name} / {config.prompt_style} / {config.generator.name}"
    if process_rank() == 0:  # every rank of a tensor-parallel generator holds the same results
        paths = write_report(report, config.output_dir, config=asdict(config), title=title)
        log.info("%s", format_table(report, title))
        log.info("evaluate: wrote %s, %s, %s", paths["results"], paths["records"], paths["table"])
    return report.summary


# A precomputed generations file without a problem's generations raises KeyError: a bad input.
@hydra_entry_point("evaluate", register_configs, user_errors=(KeyError,))
def main(config: EvaluateConfig) -> None:
    evaluate(config)


if __name__ == "__main__":
    main()
