"""The training core shared by pretraining, SFT and GRPO (loop, optimizer, schedules,
checkpoints, metrics, graceful stop). See each module's docstring; the public API:

- session.py: `setup_training(model, parallelism, optimizer, trainer, checkpoint, vocab_size,
  runtime=None, model_builder=None) -> TrainingSession`, `TrainState`, `wrap_for_training`.
- loop.py: `run_loop(session, step, validation, after_step, save)` (the lifecycle every recipe
  shares; a step returns a `StepRecord`), `train(session, batches, loss_fn, forward_fn,
  validation_batches)` (run_loop with the pretraining/SFT step), `train_step`, `evaluate`,
  `forward_only`, `gpt_forward`, `masked_token_loss`, `save_training_checkpoint`,
  `write_exit_status`, `StepResult`, `TrainOutcome`.
- checkpointing.py: `save_checkpoint`, `load_checkpoint`, `load_model_weights`,
  `model_config_from_checkpoint` (+ the directory layout); checkpoint_files.py (no torch):
  `latest_iteration`, `resolve_checkpoint`, `read_checkpoint_info`, `CheckpointError`.
- optimizer.py: `build_optimizer`, `build_scheduler`, `learning_rate_at`.
- signals.py: `GracefulStop`. metrics.py: `ProgressLogger`, `read_metrics`.
- config.py: the `optimizer`, `trainer` and `checkpoint` sections and the checks across sections.
Importing this package is cheap; torch and megatron load in the submodules.
"""
