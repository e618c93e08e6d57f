"""megatron-core recipes for DeepSeekMath-style training: pretraining, SFT, GRPO, evaluation,
checkpoint conversion. Importing this package is cheap; torch and megatron load in submodules."""
