"""iterative_rl: DeepSeekMath's iterative RL - GRPO with a learned reward model, then the reward
model retrained on the current policy's labelled samples (with 10% of every batch replayed from
earlier data), then the reference model reset to the policy, repeated (rl/iterative.py).

Locally (CPU; the tiny model SFT'd on the step-chain task, an ORM or a PRM trained from it):
    python -m megatron_recipes.iterative_rl +experiment=grpo_iterative_tiny_cpu \\
        iterative.policy=outputs/sft/tiny_cpu/checkpoints iterative.reward_model=outputs/orm/checkpoints \\
        iterative.reward_model_data=[outputs/labels/round0] iterative.work_dir=outputs/iterative
On a cluster (each stage under the launcher; the paper's settings in the stage presets):
    python -m megatron_recipes.iterative_rl +experiment=grpo_iterative iterative.policy=/ckpt/instruct \\
        iterative.reward_model=/ckpt/rm iterative.reward_model_data=[/data/rm] \\
        'iterative.launcher=[torchrun,--nproc-per-node,8]'
Rerunning the same command continues after the last finished stage, also after a SIGKILL.
Output: `<work_dir>/iteration_<k>/manifest.json` per iteration, `<work_dir>/iterative_summary.json`
(also the last line on stdout), the stages' runs and logs under `<work_dir>`.
Bad settings fail with one line `error: ...` and exit status 2; a failing stage exits 1 naming
its log.
"""

from __future__ import annotations

import json
import logging
import sys

from megatron_recipes.config import IterativeRlConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.logs import TRAINING_CONSOLE

log = logging.getLogger("iterative_rl")


@hydra_entry_point("iterative_rl", register_configs, console=TRAINING_CONSOLE)
def main(config: IterativeRlConfig) -> int:
    from megatron_recipes.rl import iterative  # noqa: PLC0415  torch/megatron load after the config checks

    try:
        summary = iterative.IterativeRl(config.iterative).run()
    except iterative.StageFailed as error:
        log.error("%s", error)
        return 1
    print(json.dumps(summary), file=sys.stdout)  # the command's machine-readable answer
    return 0


if __name__ == "__main__":
    main()
