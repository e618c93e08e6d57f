"""Tiny random LlamaForCausalLM checkpoints made with transformers, offline (no hub).

Norm weights are drawn at random too (transformers initialises them to ones), so a converter
that swapped the two norms of a layer, or the final norm, would change the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# GQA (4 query heads, 2 key/value heads), 4 layers (2 per stage at PP=2), a vocabulary whose
# padding differs between TP=1 (384 rows) and TP=2 (512 rows), non-default theta and epsilon.
GQA_UNTIED = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=50000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
# Tied embeddings, one key/value head per query head, stored as a single model.safetensors.
TIED = dict(
    vocab_size=260,
    hidden_size=32,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


def write_tiny_llama(directory: Path, sizes: dict, seed: int = 0, max_shard_size: str = "5GB"):
    """Save a random LlamaForCausalLM with these sizes to `directory`; returns the model (eval)."""
    config = LlamaConfig(**sizes, initializer_range=0.1, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    return model


def greedy_generate(model, prompts, new_tokens: int):
    """transformers' own greedy decoding (KV cache), no stopping token."""
    with torch.no_grad():
        output = model.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return output[:, prompts.shape[1] :]
