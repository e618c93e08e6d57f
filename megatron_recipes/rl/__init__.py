"""GRPO (DeepSeekMath section 4.1) on megatron-core. See each module's docstring; the public API:

- objectives.py: registries ADVANTAGE_ESTIMATORS (outcome, outcome_unscaled, process, gae), KL_ESTIMATORS (k1, k2, k3),
  LOSS_AGGREGATIONS (sequence_mean, token_mean) with `register_*` / `get_*`; `clipped_surrogate`,
  `grpo_loss`, `GrpoLossSettings`, and readable references (`reference_*`) beside each.
- step_rewards.py: the step-reward interface for process supervision (`Step`, STEP_REWARDS,
  `arithmetic_steps`, `step_end_tokens`).
- rollout.py: `generate_rollouts`, `compute_rewards`, `rollout_batch` -> `RolloutBatch`.
- config.py: `RlConfig`, the `rl` section (its names checked against the registries above).
- trainer.py: `GrpoTrainer` (the loop), `grpo_updates`, `sequence_log_probs`, `grpo_loss_function`.
Importing this package is cheap; torch loads with objectives.py, megatron with the trainer.
"""
