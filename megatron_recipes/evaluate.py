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

from megatron_recipes.config import EvaluateConfig, register_configs
from stack_common.cli import hydra_entry_point


# A precomputed generations file without a problem's generations raises KeyError: a bad input.
@hydra_entry_point("evaluate", register_configs, user_errors=(KeyError,))
def main(config: EvaluateConfig) -> None:
    from megatron_recipes.recipes import evaluate  # noqa: PLC0415  torch/megatron load after the config checks

    evaluate.evaluate(config)


if __name__ == "__main__":
    main()
