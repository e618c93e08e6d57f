"""sft: supervised fine-tuning on chat-form math solutions (chain-of-thought, program-of-thought,
tool-integrated), loss on response tokens only, examples packed to the context length.

Locally (CPU; JSONL records as in megatron_recipes/data/sft.py):
    python -m megatron_recipes.sft +experiment=sft_tiny_cpu sft_data.paths=[data/sft.jsonl] \\
        checkpoint.init_from=outputs/pretrain/tiny_cpu/checkpoints
    torchrun --nproc-per-node 2 -m megatron_recipes.sft +experiment=sft_tiny_cpu parallelism=tp2 sft_data.paths=[...]
On a cluster (the paper's setting: 7B, packed to 4K, batch 256, constant lr 5e-5, 500 steps):
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.sft +experiment=sft_paper_7b \\
        sft_data.paths=[/data/sft] checkpoint.init_from=/ckpt/deepseekmath_base
    (or torchrun --nnodes N --nproc-per-node 8 ... -m megatron_recipes.sft ..., as for pretrain)
Bad settings and unreadable data fail before any process group, with one line `error: ...` and
exit status 2. Restarting the same command resumes from `<checkpoint.dir>/latest` (model,
optimizer, schedule, RNG, data position); SIGTERM/SIGUSR1 checkpoint and exit 75.

The tokenizer follows the model: sft_data.tokenizer if set, else the one the starting checkpoint
(checkpoint.init_from) recorded, else the tokenizer.json of model.init_from_hf, else DeepSeek's.
The run records its tokenizer in the checkpoints (train_state.extra.tokenizer), so GRPO and
`python -m megatron_recipes.evaluate generator=megatron` find it.
Outputs under trainer.output_dir: checkpoints/, metrics.jsonl, tensorboard/.
Cost: reading and packing is linear in the data (once, on every rank); then per step one
forward/backward of global_batch_size x seq_length tokens.
"""

from __future__ import annotations

from megatron_recipes.config import SftConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.logs import TRAINING_CONSOLE


@hydra_entry_point("sft", register_configs, console=TRAINING_CONSOLE)
def main(config: SftConfig) -> int:
    """Returns the exit status: 0, or trainer.signal_exit_code after a signal or time limit."""
    from megatron_recipes.recipes import sft  # noqa: PLC0415  torch/megatron load after the config checks

    return sft.run_sft(config, sft.plan_sft(config)).exit_code


if __name__ == "__main__":
    main()
