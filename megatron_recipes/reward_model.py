"""reward_model: train an outcome (ORM) or process (PRM) reward model on megatron-core - a GPTModel
with a scalar head (reward_models/model.py) - from a policy or base checkpoint, on labelled
responses (reward_models/data.py: rule-based outcome labels, Math-Shepherd step labels from
`python -m megatron_recipes.label_steps`, or any JSONL of that form).

Locally (CPU; the tiny model SFT'd on a task, labels from label_steps):
    python -m megatron_recipes.reward_model +experiment=reward_model_tiny_cpu \\
        checkpoint.init_from=outputs/sft/tiny_cpu/checkpoints reward_model.train_paths=[labels/]
    python -m megatron_recipes.reward_model ... reward_model.kind=prm       # a process reward model
    torchrun --nproc-per-node 2 -m megatron_recipes.reward_model ... parallelism=tp2
On a cluster (the paper: from DeepSeekMath-Base 7B, learning rate 2e-5):
    srun --ntasks-per-node 8 --gpus-per-task 1 python -m megatron_recipes.reward_model \\
        +experiment=reward_model_paper_7b checkpoint.init_from=/ckpt/deepseekmath_base reward_model.train_paths=[...]
    (or torchrun --nnodes N --nproc-per-node 8 ..., as for pretrain)
Tensor, pipeline, data and sequence parallelism all apply (the head sits on the last stage).
Bad settings and unusable data fail before any process group, with one line `error: ...` and
exit status 2; records that cannot be used are counted and written to dead_letter.jsonl.
Restarting the same command resumes from `<checkpoint.dir>/latest` (model, optimizer, schedule,
RNG, data position); SIGTERM/SIGUSR1 checkpoint and exit 75.

Outputs under trainer.output_dir: checkpoints/ (model_config records reward_model_kind, hf_class
and step_separator; train_state.extra the tokenizer and the data summary), metrics.jsonl (loss,
accuracy, replay_fraction per step; validation_loss / _accuracy / _auc on the held-out split),
tensorboard/, dead_letter.jsonl. Export to Hugging Face: `python -m megatron_recipes.convert
mode=export` (LlamaForSequenceClassification for an ORM, LlamaForTokenClassification for a PRM).
Cost: reading and tokenizing the data once (linear); per step one forward/backward of the batch.
"""

from __future__ import annotations

from megatron_recipes.config import RewardModelConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.logs import TRAINING_CONSOLE


@hydra_entry_point("reward_model", register_configs, console=TRAINING_CONSOLE)
def main(config: RewardModelConfig) -> int:
    """Returns the exit status: 0, or trainer.signal_exit_code after a signal or time limit."""
    from megatron_recipes.recipes import reward_model  # noqa: PLC0415  torch/megatron load after the config checks

    return reward_model.run_reward_model(config, reward_model.plan_reward_model(config)).exit_code


if __name__ == "__main__":
    main()
