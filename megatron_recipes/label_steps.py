"""label_steps: reward-model data from a policy's own solutions. For each question the policy
checkpoint samples `samples_per_question` solutions (the shared KV-cache generator, batched);
each solution's final answer is checked by the answer checker (its outcome label); with
label.method=math_shepherd a completer checkpoint (the SFT model by default: `completer`, else
the policy) continues every step prefix `label.completions` times and each step gets a hard
label (any continuation reaches the reference answer) and a soft label (the fraction that do)
(reward_models/labeling.py).

Locally (CPU):
    python -m megatron_recipes.label_steps policy=outputs/sft/tiny_cpu/checkpoints \\
        prompts.source=gsm8k prompts.path=train_questions.jsonl output_dir=outputs/labels/round1
    python -m megatron_recipes.label_steps ... label.method=math_shepherd label.completions=8
    torchrun --nproc-per-node 2 -m megatron_recipes.label_steps ... tensor_model_parallel_size=2
On a cluster: the same command under srun / torchrun; tensor parallelism splits each model and
the data-parallel ranks (world size / TP) take every D-th shard.

Output (reward_model.train_paths reads the directory): `shard_00000.jsonl`, ... one record per
solution, see reward_models/data.py (prompt, response, correct; step_labels with
hard_step_labels and soft_step_labels for math_shepherd; question, id, reference, sample,
finish_reason). A shard (questions_per_shard questions) is written atomically when complete and
skipped when it exists, so a restarted run continues where it stopped and writes the same
records (seeds depend on the shard only). Solutions whose reference cannot be parsed go to
`dead_letter.jsonl`. A progress line per shard; at the end `summary.json`: solutions, outcome
accuracy, steps labelled, label balance (hard and soft), completions, completions per second,
over every shard present; its JSON is also the command's last line on stdout.

Cost: generation of Q x S solutions plus (for math_shepherd) Q x S x (steps - 1) x completions
continuations; memory: one shard's requests at a time.
"""

from __future__ import annotations

import json

from megatron_recipes.config import LabelStepsConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.logs import process_rank


@hydra_entry_point("label_steps", register_configs)
def main(config: LabelStepsConfig) -> None:
    from megatron_recipes.recipes import label_steps  # noqa: PLC0415  torch/megatron load after the config checks

    summary = label_steps.label_steps(config)
    if process_rank() == 0:
        print(json.dumps(summary))  # the command's machine-readable answer


if __name__ == "__main__":
    main()
