"""rejection_sample: DeepSeek-R1's rejection sampling. From a checkpoint (the reasoning-RL model),
`sampling.n` samples per prompt with the shared KV-cache generator; a sample is kept when the
checker (acceptance.reward: an accuracy reward, or a reward model registered by name) accepts it
and R1's readability rules pass (no mixed-language chain, no over-long paragraph, no code block),
after deduplication and a cap per prompt. The kept samples are SFT data with provenance.

Locally (CPU; the R1 task's questions, megatron_recipes/data/r1_tasks.py):
    python -m megatron_recipes.rejection_sample +experiment=r1_rejection_tiny_cpu \\
        generator.checkpoint=outputs/r1/reasoning_rl/checkpoints prompts.path=TASK/prompts_train.jsonl
    torchrun --nproc-per-node 2 -m megatron_recipes.rejection_sample ...      # two data-parallel ranks
On a cluster (R1: ~600k reasoning samples from the RL checkpoint):
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.rejection_sample \\
        +experiment=r1_rejection generator.checkpoint=/ckpt/r1_reasoning_rl prompts.path=/data/prompts.jsonl \\
        generator.tensor_model_parallel_size=8
Every rank samples its share of the prompts (data parallel over tensor-parallel groups). Samples
made elsewhere (vLLM...) are judged the same way with generator=precomputed generator.path=FILE.
A rerun of the same command resumes after the last finished chunk.
Outputs under output_dir: kept/ (SFT JSONL: sft_data.paths=[<output_dir>/kept]), samples/ (every
sample with its verdict: the unfiltered baseline), stats/, summary.json (kept / dropped by reason,
accepted-per-prompt histogram). Bad settings fail before any work with one line `error: ...`.
Cost: generation of prompts x n responses; see megatron_recipes/rejection/sampler.py.
"""

from __future__ import annotations

from megatron_recipes.config import RejectionSampleConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("rejection_sample", register_configs)
def main(config: RejectionSampleConfig) -> None:
    from megatron_recipes.recipes import rejection_sample  # noqa: PLC0415  torch/megatron load after the config checks

    rejection_sample.run_rejection_sampling(config)


if __name__ == "__main__":
    main()
