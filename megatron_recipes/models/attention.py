"""The local layer spec's core attention, computed by torch's fused scaled-dot-product kernel.

    spec = with_fused_core_attention(get_gpt_layer_local_spec(normalization="RMSNorm"))

megatron-core's local `DotProductAttention` materialises the scores [b x heads, s, s] with
baddbmm, builds and applies the causal mask with masked_fill, runs softmax, then bmm, with the
layout copies around them; its backward keeps the probabilities. `FusedDotProductAttention`
computes the same softmax(q k^T x scale + causal mask) v with one `scaled_dot_product_attention`
call (torch's flash kernel on the CPU, flash/efficient kernels on GPUs), which on the tiny
model's training step (batch 8 x 128) is about 2x faster forward and backward per layer and
does not store the score matrix. It is to the local spec what Transformer Engine's fused
attention is to the TE spec.

It takes over only where it computes exactly megatron's function: no explicit attention mask
(the causal mask of the GPT model, or none for a single query position), no attention bias, no
packed sequences, vanilla softmax, no sliding window, no query-key layer scaling, and no
attention dropout while training (megatron's RNG tracker drives that dropout). Everything else
(e.g. SFT's packed block-causal masks) runs megatron's own code. Parameters and checkpoint keys
are megatron's (the subclass adds none).

Cost: O(batch x heads x s^2 x head_dim) compute like any attention, O(batch x heads x s x
head_dim) memory (no s^2 score matrix kept for the backward).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class FusedDotProductAttention(DotProductAttention):
    """megatron's DotProductAttention with its common case on torch's fused kernel (see module docstring)."""

    def _fused_applies(self, query, key, attention_mask, attention_bias, packed_seq_params) -> bool:
        config = self.config
        return (
            attention_mask is None
            and attention_bias is None
            and packed_seq_params is None
            and self.softmax_offset is None
            and getattr(config, "window_size", None) is None
            and not config.apply_query_key_layer_scaling
            and not (self.training and self.attention_dropout.p > 0)
            # A causal mask is only defined for as many queries as keys (megatron's own rule).
            and (query.size(0) == 1 or query.size(0) == key.size(0) or self.attn_mask_type != AttnMaskType.causal)
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
    ):
        """query [sq, b, heads, head_dim], key/value [sk, b, groups, head_dim] -> [sq, b, heads x head_dim]."""
        if not self._fused_applies(query, key, attention_mask, attention_bias, packed_seq_params):
            return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias, packed_seq_params)
        queries, batch, heads, head_dim = query.shape
        # megatron applies its constructor's mask type (the `attn_mask_type` argument is unused there too).
        causal = self.attn_mask_type == AttnMaskType.causal and queries > 1
        context = F.scaled_dot_product_attention(
            query.permute(1, 2, 0, 3),
            key.permute(1, 2, 0, 3),
            value.permute(1, 2, 0, 3),
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=self.num_attention_heads_per_partition != self.num_query_groups_per_partition,
        )
        # [b, heads, sq, head_dim] -> [sq, b, heads x head_dim]
        return context.permute(2, 0, 1, 3).reshape(queries, batch, heads * head_dim)


def with_fused_core_attention(spec):
    """A copy of a local GPT layer spec whose self-attention uses FusedDotProductAttention."""
    attention = spec.submodules.self_attention
    submodules = dataclasses.replace(attention.submodules, core_attention=FusedDotProductAttention)
    layer_submodules = dataclasses.replace(
        spec.submodules, self_attention=dataclasses.replace(attention, submodules=submodules)
    )
    return dataclasses.replace(spec, submodules=layer_submodules)
