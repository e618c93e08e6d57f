"""pretrain: (continued) pretraining of a LLaMA-style model on a data mixture with megatron-core.

Locally (CPU, the sample corpus after `python -m beam_pipelines.prepare` and
`python -m beam_pipelines.tokenize`):
    python -m megatron_recipes.pretrain +experiment=tiny_cpu
    torchrun --nproc-per-node 2 -m megatron_recipes.pretrain +experiment=tiny_cpu parallelism=tp2
    python -m megatron_recipes.pretrain trainer=cpu data=mock model=tiny trainer.train_steps=20
On a cluster (one process per GPU; torchrun per node, or srun with one task per GPU):
    torchrun --nnodes $N --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 \\
        --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout 300 \\
        -m megatron_recipes.pretrain +experiment=deepseekmath_base_7b corpus.work_dir=/data/dsm \\
        checkpoint.init_from=/ckpt/coder_v15      # or model.init_from_hf=/models/deepseek-coder-7b-base-v1.5
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.pretrain +experiment=corpus_comparison_1p3b
Impossible settings (heads vs TP, layers vs PP, batch vs micro-batch x DP, missing data,
vocabulary too small for the tokenizer, data tokenized with another tokenizer) fail before any
process group exists, with one line `error: ...` and exit status 2. The tokenizer follows the
model: with model.init_from_hf the checkpoint's own tokenizer.json is used (and recorded in this
run's checkpoints), so the tokenize step must use it too (tokenizer.path=<the HF checkpoint>).

Restarting the same command resumes from `<checkpoint.dir>/latest` (model, optimizer, lr
schedule, RNG, data position), at any TP/PP/DP layout. SIGTERM/SIGUSR1 make it checkpoint and
exit with `trainer.signal_exit_code` (75); `exit_status.json` says why (training/signals.py).

Outputs under trainer.output_dir: checkpoints/ (see training/checkpointing.py),
metrics.jsonl, tensorboard/. megatron's sample indices are cached beside each dataset
(`<prefix>/cache/`) unless data.cache_dir says otherwise.
Cost: per step one forward+backward of global_batch_size x seq_length tokens; the data
indices are built once (O(samples)) and cached.
"""

from __future__ import annotations

from megatron_recipes.config import PretrainConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.logs import TRAINING_CONSOLE


@hydra_entry_point("pretrain", register_configs, console=TRAINING_CONSOLE)
def main(config: PretrainConfig) -> int:
    """Returns the exit status: 0, or trainer.signal_exit_code after a signal or time limit."""
    from megatron_recipes.recipes import pretrain  # noqa: PLC0415  torch/megatron load after the config checks

    return pretrain.run_pretraining(config, pretrain.plan_pretraining(config)).exit_code


if __name__ == "__main__":
    main()
