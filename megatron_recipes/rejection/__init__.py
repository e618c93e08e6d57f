"""Rejection sampling (DeepSeek-R1's third stage): k samples per prompt from a checkpoint, kept when
a checker (or a reward model) accepts them and readability rules pass, written as SFT data.

- config.py: `AcceptanceConfig`, `FilterConfig` (the `acceptance` and `filters` sections).
- filters.py: the pure rules (`judge_prompt_samples`) and the summary counts (`Tally`).
- sampler.py: RejectionSampler, the batched, sharded, resumable sampler (its run: recipes/rejection_sample.py).
The entry point is `python -m megatron_recipes.rejection_sample`.
"""
