"""Which Hugging Face rows make up each megatron-core tensor (and back): one table, both directions.

megatron-core's GPTModel (local and Transformer Engine specs alike) stores a LLaMA layer as

    decoder.layers.self_attention.linear_qkv.layer_norm_weight   <- input_layernorm
    decoder.layers.self_attention.linear_qkv.weight              <- q_proj, k_proj, v_proj, fused
    decoder.layers.self_attention.linear_proj.weight             <- o_proj
    decoder.layers.mlp.linear_fc1.layer_norm_weight              <- post_attention_layernorm
    decoder.layers.mlp.linear_fc1.weight                         <- gate_proj, up_proj, fused
    decoder.layers.mlp.linear_fc2.weight                         <- down_proj

and, for Qwen2 (`add_qkv_bias`), `decoder.layers.self_attention.linear_qkv.bias` <- the q, k and v
biases, fused like the weights' rows; with the layers stacked on a leading axis of the
checkpoint's global tensors, plus
`embedding.word_embeddings.weight` (model.embed_tokens), `decoder.final_layernorm.weight`
(model.norm) and `output_layer.weight` (lm_head; absent when the embeddings are tied). A reward
model has `reward_head.weight` [1, hidden] (HF `score.weight` of LlamaForSequenceClassification /
LlamaForTokenClassification) instead of the output layer.

Fusions, all along dim 0 (output rows), so every megatron tensor is a list of row blocks:
- QKV, per key/value group g (GQA: heads_per_group query heads share one key/value head):
  [q rows of heads g*hpg .. (g+1)*hpg-1 | k rows of head g | v rows of head g], groups in
  order. Tensor parallelism splits whole groups, which is why the heads are interleaved.
- fc1: [all gate_proj rows | all up_proj rows] (megatron's checkpoint stores the gated unit's
  two halves as two global blocks, so this holds at every TP size).
- embedding / output layer: the vocabulary rows, then zero rows up to the padded size.
HF's rotary layout (rotate-half, after HF's own permutation of q/k) is megatron's default
non-interleaved RoPE, so q and k rows are copied as they are.

Each `MegatronTensor` is (key, layer, per-layer global shape, row blocks). A converter asks
for any rectangle of it (`read_region`): a tensor-parallel shard, a whole layer, or the
padded embedding; the HF reader then touches only those rows. Export inverts the same table.

Cost: the table has O(layers) entries; nothing here holds tensor data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from megatron_recipes.convert.architecture import HFArchitecture

EMBEDDING = "embedding.word_embeddings.weight"
QKV_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
QKV_BIAS = "decoder.layers.self_attention.linear_qkv.bias"
PROJECTION = "decoder.layers.self_attention.linear_proj.weight"
FC1_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
OUTPUT = "output_layer.weight"
# A reward model's (or value function's) scalar head on the final hidden states: [1, hidden].
SCORE_HEAD = "reward_head.weight"
LAYER_KEYS = (QKV_NORM, QKV, QKV_BIAS, PROJECTION, FC1_NORM, FC1, FC2)
VOCABULARY_KEYS = (EMBEDDING, OUTPUT)

HF_EMBEDDING = "model.embed_tokens.weight"
HF_FINAL_NORM = "model.norm.weight"
HF_OUTPUT = "lm_head.weight"
HF_SCORE_HEAD = "score.weight"
# Buffers some older HF checkpoints saved; recomputed by every loader, never converted.
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_layer_name(layer: int, part: str, kind: str = "weight") -> str:
    return f"model.layers.{layer}.{part}.{kind}"


@dataclass(frozen=True)
class RowBlock:
    """`rows` consecutive rows taken from HF tensor `hf_name` starting at `hf_row`; a block with
    hf_name None is zero padding (vocabulary rows beyond the tokenizer's)."""

    hf_name: str | None
    hf_row: int
    rows: int


@dataclass(frozen=True)
class MegatronTensor:
    key: str
    layer: int | None  # position on the stacked layer axis; None for non-layer tensors
    shape: tuple[int, ...]  # this layer's part of the global tensor
    blocks: tuple[RowBlock, ...]

    def label(self) -> str:
        return self.key if self.layer is None else f"{self.key}[layer {self.layer}]"

    def hf_names(self) -> list[str]:
        return [block.hf_name for block in self.blocks if block.hf_name is not None]


class TensorMapping:
    """The conversion table of one architecture at one padded vocabulary size."""

    def __init__(self, architecture: HFArchitecture, padded_vocab_size: int):
        if padded_vocab_size < architecture.vocab_size:
            raise ValueError(f"padded vocabulary {padded_vocab_size} < vocabulary {architecture.vocab_size}")
        self.architecture = architecture
        self.padded_vocab_size = padded_vocab_size
        self.tensors: dict[tuple[str, int | None], MegatronTensor] = {}
        for tensor in self._build():
            self.tensors[(tensor.key, tensor.layer)] = tensor

    def _vocabulary(self, key: str, hf_name: str) -> MegatronTensor:
        a = self.architecture
        blocks = [RowBlock(hf_name, 0, a.vocab_size)]
        if self.padded_vocab_size > a.vocab_size:
            blocks.append(RowBlock(None, 0, self.padded_vocab_size - a.vocab_size))
        return MegatronTensor(key, None, (self.padded_vocab_size, a.hidden_size), tuple(blocks))

    def _build(self) -> Iterable[MegatronTensor]:
        a = self.architecture
        h, d, f = a.hidden_size, a.head_dim, a.ffn_hidden_size
        yield self._vocabulary(EMBEDDING, HF_EMBEDDING)
        for layer in range(a.num_layers):
            q, k, v = (hf_layer_name(layer, f"self_attn.{p}_proj") for p in "qkv")
            qkv_blocks = []
            for group in range(a.num_key_value_heads):
                qkv_blocks += [
                    RowBlock(q, group * a.heads_per_group * d, a.heads_per_group * d),
                    RowBlock(k, group * d, d),
                    RowBlock(v, group * d, d),
                ]
            qkv_rows = (a.num_attention_heads + 2 * a.num_key_value_heads) * d
            yield MegatronTensor(QKV_NORM, layer, (h,), (RowBlock(hf_layer_name(layer, "input_layernorm"), 0, h),))
            yield MegatronTensor(QKV, layer, (qkv_rows, h), tuple(qkv_blocks))
            if a.qkv_bias:  # the same row blocks, from the bias vectors
                bias_blocks = tuple(
                    RowBlock(block.hf_name.removesuffix(".weight") + ".bias", block.hf_row, block.rows)
                    for block in qkv_blocks
                )
                yield MegatronTensor(QKV_BIAS, layer, (qkv_rows,), bias_blocks)
            yield MegatronTensor(
                PROJECTION,
                layer,
                (h, a.num_attention_heads * d),
                (RowBlock(hf_layer_name(layer, "self_attn.o_proj"), 0, h),),
            )
            yield MegatronTensor(
                FC1_NORM, layer, (h,), (RowBlock(hf_layer_name(layer, "post_attention_layernorm"), 0, h),)
            )
            yield MegatronTensor(
                FC1,
                layer,
                (2 * f, h),
                (
                    RowBlock(hf_layer_name(layer, "mlp.gate_proj"), 0, f),
                    RowBlock(hf_layer_name(layer, "mlp.up_proj"), 0, f),
                ),
            )
            yield MegatronTensor(FC2, layer, (h, f), (RowBlock(hf_layer_name(layer, "mlp.down_proj"), 0, h),))
        yield MegatronTensor(FINAL_NORM, None, (h,), (RowBlock(HF_FINAL_NORM, 0, h),))
        if a.has_score_head:
            yield MegatronTensor(SCORE_HEAD, None, (1, h), (RowBlock(HF_SCORE_HEAD, 0, 1),))
        elif not a.tie_word_embeddings:
            yield self._vocabulary(OUTPUT, HF_OUTPUT)

    def lookup(self, key: str, layer: int | None) -> MegatronTensor | None:
        return self.tensors.get((key, layer))

    def layer_tensors(self, layer: int | None) -> list[MegatronTensor]:
        """The tensors of one layer (None: embedding, final norm, output layer)."""
        return [tensor for (_, tensor_layer), tensor in self.tensors.items() if tensor_layer == layer]

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every HF tensor the architecture has, in HF order (embedding, layers, norm, lm_head)."""
        a = self.architecture
        h, d, f = a.hidden_size, a.head_dim, a.ffn_hidden_size
        shapes = {HF_EMBEDDING: (a.vocab_size, h)}
        for layer in range(a.num_layers):
            shapes[hf_layer_name(layer, "self_attn.q_proj")] = (a.num_attention_heads * d, h)
            shapes[hf_layer_name(layer, "self_attn.k_proj")] = (a.num_key_value_heads * d, h)
            shapes[hf_layer_name(layer, "self_attn.v_proj")] = (a.num_key_value_heads * d, h)
            if a.qkv_bias:
                shapes[hf_layer_name(layer, "self_attn.q_proj", "bias")] = (a.num_attention_heads * d,)
                shapes[hf_layer_name(layer, "self_attn.k_proj", "bias")] = (a.num_key_value_heads * d,)
                shapes[hf_layer_name(layer, "self_attn.v_proj", "bias")] = (a.num_key_value_heads * d,)
            shapes[hf_layer_name(layer, "self_attn.o_proj")] = (h, a.num_attention_heads * d)
            shapes[hf_layer_name(layer, "mlp.gate_proj")] = (f, h)
            shapes[hf_layer_name(layer, "mlp.up_proj")] = (f, h)
            shapes[hf_layer_name(layer, "mlp.down_proj")] = (h, f)
            shapes[hf_layer_name(layer, "input_layernorm")] = (h,)
            shapes[hf_layer_name(layer, "post_attention_layernorm")] = (h,)
        shapes[HF_FINAL_NORM] = (h,)
        if a.has_score_head:
            shapes[HF_SCORE_HEAD] = (1, h)
        elif not a.tie_word_embeddings:
            shapes[HF_OUTPUT] = (a.vocab_size, h)
        return shapes

    def hf_sources(self, tensors: Iterable[MegatronTensor]) -> dict[str, list[tuple[MegatronTensor, int, RowBlock]]]:
        """For export: HF name -> [(megatron tensor, row offset in it, block)] in HF row order."""
        sources: dict[str, list[tuple[MegatronTensor, int, RowBlock]]] = {}
        for tensor in tensors:
            offset = 0
            for block in tensor.blocks:
                if block.hf_name is not None:
                    sources.setdefault(block.hf_name, []).append((tensor, offset, block))
                offset += block.rows
        return {name: sorted(parts, key=lambda part: part[2].hf_row) for name, parts in sources.items()}


def read_region(tensor: MegatronTensor, source, out, row_start: int, column_range: tuple[int, int] | None) -> None:
    """Fill `out` (rows [row_start, row_start + len(out)) of `tensor`, columns `column_range`)
    from the HF checkpoint `source`, copying block by block; padding rows become zeros."""
    row_stop = row_start + out.shape[0]
    offset = 0
    for block in tensor.blocks:
        low, high = max(row_start, offset), min(row_stop, offset + block.rows)
        if low < high:
            target = out[low - row_start : high - row_start]
            if block.hf_name is None:
                target.zero_()
            else:
                rows = (block.hf_row + low - offset, block.hf_row + high - offset)
                target.copy_(source.read(block.hf_name, rows, column_range))
        offset += block.rows
    if offset != tensor.shape[0]:
        raise AssertionError(f"{tensor.label()}: blocks cover {offset} rows of {tensor.shape[0]}")
