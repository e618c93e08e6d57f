"""LLaMA-style models on megatron-core (see `llama.py`).

Public API:
- `build_model(model, parallelism, vocab_size, device="cpu", precision="fp32", fp8=None,
  meta_device=False) -> list[GPTModel]`: this rank's chunks (one per virtual pipeline stage).
- `transformer_config(model, parallelism, precision, fp8, device, meta_device) -> TransformerConfig`.
- `choose_layer_spec(model, device, fp8) -> LayerSpecChoice(name, reason, spec)`.
- `padded_vocab_size(vocab, divisible_by, tp)`, `resolve_precision(precision, device)`.
- `parameter_count(chunks)`, `architecture_parameter_count(model, vocab)`,
  `training_flops_per_token(model, vocab, seq_length)` (for MFU).
The `model` section's schema is config.py (ModelConfig, whose defaults are the tiny model); the
other presets are YAML files in conf/model/ (deepseek_math_7b, deepseek_1p3b, tiny_gqa, small_cpu).
"""

from __future__ import annotations

from megatron_recipes.models.llama import (
    LayerSpecChoice,
    architecture_parameter_count,
    build_model,
    choose_layer_spec,
    padded_vocab_size,
    parameter_count,
    resolve_precision,
    training_flops_per_token,
    transformer_config,
)

__all__ = [
    "LayerSpecChoice",
    "architecture_parameter_count",
    "build_model",
    "choose_layer_spec",
    "padded_vocab_size",
    "parameter_count",
    "resolve_precision",
    "training_flops_per_token",
    "transformer_config",
]
