"""LLaMA-style models on megatron-core.

- llama.py (loads torch and megatron-core): `build_model(model, parallelism, vocab_size,
  device="cpu", precision="fp32", fp8=None, meta_device=False) -> list[GPTModel]` (this rank's
  chunks, one per virtual pipeline stage); `transformer_config(model, parallelism, precision, fp8,
  device, meta_device) -> TransformerConfig`; `choose_layer_spec(model, device, fp8) ->
  LayerSpecChoice(name, reason, spec)`; `padded_vocab_size(vocab, divisible_by, tp)`,
  `resolve_precision(precision, device)`; `parameter_count(chunks)`,
  `architecture_parameter_count(model, vocab)`, `training_flops_per_token(model, vocab,
  seq_length)` (for MFU).
- config.py (light: the config checks import it): the `model` section's schema (ModelConfig,
  whose defaults are the tiny model); the other presets are YAML files in conf/model/
  (deepseek_math_7b, deepseek_1p3b, tiny_gqa, small_cpu).
"""
