"""Model presets built for real with megatron-core (on the meta device for the large ones)."""

from __future__ import annotations

import pytest
import torch

from megatron_recipes.config import register_configs
from megatron_recipes.models.llama import (
    architecture_parameter_count,
    build_model,
    choose_layer_spec,
    padded_vocab_size,
    parameter_count,
    training_flops_per_token,
)
from stack_common.cli import compose_config
from stack_common.errors import ConfigError


def preset(name: str):
    return compose_config("pretrain", [f"model={name}"], register_configs)


def test_deepseek_math_7b_has_the_published_parameter_count(single_process_groups):
    config = preset("deepseek_math_7b")
    chunks = build_model(
        config.model, config.parallelism, vocab_size=config.model.vocab_size, device="cpu", meta_device=True
    )
    assert all(p.device.type == "meta" for p in chunks[0].parameters())
    count = parameter_count(chunks)
    # DeepSeek-Coder-7B-Base-v1.5 / DeepSeekMath-Base 7B: 6.91B parameters.
    assert abs(count - 6.91e9) < 0.005e9, count
    assert count == architecture_parameter_count(config.model, 102400)
    names = dict(chunks[0].named_parameters())
    assert names["embedding.word_embeddings.weight"].shape == (102400, 4096)
    assert names["output_layer.weight"].shape == (102400, 4096)  # untied
    assert names["decoder.layers.0.mlp.linear_fc1.weight"].shape == (2 * 11008, 4096)  # SwiGLU gate + up
    assert names["decoder.layers.0.self_attention.linear_qkv.weight"].shape == (3 * 4096, 4096)
    assert not any(name.endswith(".bias") for name in names)
    assert len(chunks[0].decoder.layers) == 30


def test_deepseek_1p3b_and_tiny_presets(single_process_groups):
    small = preset("deepseek_1p3b")
    chunks = build_model(small.model, small.parallelism, vocab_size=102400, device="cpu", meta_device=True)
    # 1.21B in the transformer layers, plus untied 102400 x 2048 input and output embeddings.
    assert parameter_count(chunks) == architecture_parameter_count(small.model, 102400) == 1_633_781_760
    tiny = preset("tiny_gqa")
    chunks = build_model(tiny.model, tiny.parallelism, vocab_size=1000, device="cpu", meta_device=True)
    vocab = padded_vocab_size(1000, 128, 1)
    assert vocab == 1024
    assert parameter_count(chunks) == architecture_parameter_count(tiny.model, vocab)
    qkv = dict(chunks[0].named_parameters())["decoder.layers.0.self_attention.linear_qkv.weight"]
    assert qkv.shape == (64 + 2 * 2 * 16, 64)  # 4 query heads, 2 key/value groups of head size 16


def test_layer_spec_choice_is_explicit_on_a_cpu_machine():
    tiny = preset("tiny").model
    choice = choose_layer_spec(tiny, device="cpu")
    assert choice.name == "local" and "no CUDA" in choice.reason
    tiny.transformer_impl = "transformer_engine"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        choose_layer_spec(tiny, device="cpu")
    tiny.transformer_impl = "local"
    with pytest.raises(ConfigError, match="fp8"):
        choose_layer_spec(tiny, device="cuda", fp8="hybrid")


def test_vocabulary_padding_and_flops():
    assert padded_vocab_size(102400, 128, 8) == 102400
    assert padded_vocab_size(129280, 128, 3) == 129408
    seven_b = preset("deepseek_math_7b").model
    flops = training_flops_per_token(seven_b, 102400, 4096)
    # PaLM's count: 6 x matmul parameters (6.07B in layers + 0.42B output layer) + 12 x L x h x s.
    matmul = 30 * (4096 * 3 * 4096 + 4096 * 4096 + 3 * 4096 * 11008) + 102400 * 4096
    assert flops == 6 * matmul + 12 * 30 * 4096 * 4096
    assert 4.49e10 < flops < 4.51e10


def test_a_fractional_rotary_base_reaches_the_rope_tables_unrounded(single_process_groups):
    """model.rotary_base (HF rope_theta) is a float from the command line to megatron's RoPE."""
    config = compose_config("pretrain", ["model.rotary_base=1234.75"], register_configs)
    assert config.model.rotary_base == 1234.75
    chunks = build_model(config.model, config.parallelism, vocab_size=1000, device="cpu")
    head_size = config.model.hidden_size // config.model.num_attention_heads
    exponents = torch.arange(0, head_size, 2, dtype=torch.float32) / head_size
    assert torch.allclose(chunks[0].rotary_pos_emb.inv_freq, 1.0 / 1234.75**exponents, rtol=1e-6)
    assert not torch.allclose(chunks[0].rotary_pos_emb.inv_freq, 1.0 / 1234**exponents, rtol=1e-6)
