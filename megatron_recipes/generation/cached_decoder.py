"""The generator's decode paths: a lean KV-cache decoder over a megatron-core GPTModel's own
weights, and megatron-core's static inference path (the fallback, and the reference it is tested
against).

    decoder = build_decoder(gpt_model)         # CachedDecoder where it covers the model, else MegatronStaticDecoder
    decoder.start(batch_size, max_length)
    logits = decoder.forward(tokens, start)    # tokens [b, s] at positions [start, start + s) -> [b, V_padded]
    decoder.select_rows(index)                 # cache rows <- rows `index` (CachedDecoder only): drop or repeat

Why a second path: megatron's static inference path (`StaticInferenceContext`) runs every
decoded token through ~600 torch calls of module wrappers, stores keys before the rotary
embedding and so rotates the whole key cache again in every layer at every step, and can
neither drop the cache of finished rows nor share one prompt's prefill among its samples. On a
small model that Python work is the whole cost of a rollout.
`CachedDecoder` computes the same function from the same parameters (looked up at each `start`,
so it always sees the current weights) with the same operations - RMSNorm, the fused QKV
projection split as megatron splits it, rotary embeddings from the model's own `rotary_pos_emb`,
softmax(q k^T x scale) v over the cache, SwiGLU, residual additions - and keeps a preallocated
cache [b, groups, max_length, 2, head_dim] per layer holding rotated keys and values side by
side, written in place by one copy. The rotary embedding is two multiplies and an add with
tables built once per batch (`rotary_tables`), which also carry a power-of-two softmax scale
onto the queries (exact); one-token steps run a forward written for that shape. A
step attends with two batched matrix products per layer (each query group against its own
cached keys: grouped-query attention without repeating keys; torch's scaled-dot-product kernel
costs ~5 ms per layer for a 64 x 29-token prefill with 16-wide heads on the CPU, the products
a tenth of it). Tensor parallelism: the vocabulary-parallel embedding lookup
and the row-parallel projections are all-reduced and the output logits gathered over the
tensor-parallel group, as megatron's layers do.

Covered: the local layer spec of models/llama.py (RMSNorm or LayerNorm, no biases, rotary
embeddings, gated SiLU MLP, grouped-query attention with query groups >= tensor-parallel size,
untied or tied output layer), pipeline size 1, no sequence/context parallelism. Anything else
(the Transformer Engine spec, MoE, learned positions, ...) uses megatron's static path;
`build_decoder` says which and why (`decoder.reason`).

Cost per forward: O(rows x tokens x (parameters + cached length x kv width)); the cache holds
2 x layers x rows x max_length x kv width values; `select_rows` copies the selected rows' cache.
A decode step makes ~110 torch calls from Python for 4 layers (megatron's static path ~600).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.inference.contexts import StaticInferenceContext
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP

from megatron_recipes.generation.logprobs import full_vocab_log_probs


def _tensor_parallel_group(world_size: int):
    if world_size == 1:
        return None
    return parallel_state.get_tensor_model_parallel_group()


def _is_identity(module) -> bool:
    return module is None or isinstance(module, IdentityOp)


def cached_decoder_unsupported(model) -> str | None:
    """Why CachedDecoder cannot run `model` (a bare GPTModel), or None when it can."""
    config = model.config
    checks = (
        (getattr(model, "position_embedding_type", None) == "rope", "position embeddings are not plain rotary"),
        (not getattr(config, "rotary_interleaved", False), "interleaved rotary embeddings"),
        (not getattr(config, "multi_latent_attention", False), "multi-latent attention"),
        (not getattr(config, "fp32_residual_connection", False), "fp32 residual connection"),
        (not getattr(config, "apply_query_key_layer_scaling", False), "query-key layer scaling"),
        (not getattr(config, "attention_output_gate", False), "attention output gate"),
        (getattr(config, "softmax_type", "vanilla") == "vanilla", "softmax with offsets"),
        (getattr(config, "context_parallel_size", 1) == 1, "context parallelism"),
        (not getattr(config, "sequence_parallel", False), "sequence parallelism"),
        (getattr(config, "num_moe_experts", None) is None, "mixture of experts"),
        (getattr(config, "window_size", None) is None, "sliding-window attention"),
        (not getattr(config, "no_rope_freq", None), "layers without rotary embeddings"),
        (config.gated_linear_unit and config.activation_func is F.silu, "MLP is not SwiGLU"),
        (getattr(model, "pre_process", True) and getattr(model, "post_process", True), "pipeline stage"),
        (getattr(model.embedding, "position_embeddings", None) is None, "learned position embeddings"),
        (not getattr(config, "fp8", None), "fp8"),
    )
    for supported, reason in checks:
        if not supported:
            return reason
    for layer in model.decoder.layers:
        attention, mlp = layer.self_attention, layer.mlp
        parts_ok = (
            isinstance(layer.input_layernorm, (torch.nn.RMSNorm, torch.nn.LayerNorm))
            and isinstance(layer.pre_mlp_layernorm, (torch.nn.RMSNorm, torch.nn.LayerNorm))
            and type(attention.linear_qkv) is ColumnParallelLinear
            and type(attention.linear_proj) is RowParallelLinear
            and isinstance(attention.core_attention, DotProductAttention)
            and _is_identity(getattr(attention, "q_layernorm", None))
            and _is_identity(getattr(attention, "k_layernorm", None))
            and type(mlp) is MLP
            and type(mlp.linear_fc1) is ColumnParallelLinear
            and type(mlp.linear_fc2) is RowParallelLinear
            and _is_identity(getattr(layer, "cross_attention", None))
        )
        if not parts_ok:
            return f"layer {layer.layer_number} is not the local spec's (norm, linear, attention and MLP types)"
        if any(
            getattr(linear, "bias", None) is not None
            for linear in (attention.linear_qkv, attention.linear_proj, mlp.linear_fc1, mlp.linear_fc2)
        ):
            return "linear layers with biases"
        if attention.num_query_groups_per_partition * attention.world_size != config.num_query_groups:
            return "fewer query groups than tensor-parallel ranks"
    if not isinstance(model.decoder.final_layernorm, (torch.nn.RMSNorm, torch.nn.LayerNorm)):
        return "final norm is not RMSNorm/LayerNorm"
    return None


def _norm(module, hidden: torch.Tensor) -> torch.Tensor:
    if isinstance(module, torch.nn.RMSNorm):
        return F.rms_norm(hidden, module.normalized_shape, module.weight, module.eps)
    return F.layer_norm(hidden, module.normalized_shape, module.weight, module.bias, module.eps)


def _is_power_of_two(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def rotary_tables(
    frequencies: torch.Tensor, head_dim: int, query_heads: int, query_scale: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cos, sin, swap) that apply megatron's rotary embedding (rope_utils._apply_rotary_pos_emb_bshd,
    not interleaved) to every slot of a query group's fused projection [..., heads + 2, head_dim]
    in two multiplies and an add: rotated = x * cos + x[..., swap] * sin.

    frequencies [positions, rotary_dim] (the model's rotary_pos_emb). megatron computes
    x * cos + cat(-x2, x1) * sin on the first rotary_dim features (x1, x2 their halves) and passes
    the rest; here x[..., swap] is cat(x2, x1, rest) and sin carries the minus sign ((-a) * b is
    a * (-b) exactly), the passed features and the value slot take cos 1 and sin 0 (x * 1 + y * 0
    is x), and the query slots' tables are multiplied by `query_scale`, a power of two (then
    exact: it is the attention's softmax scale moved from the scores onto the queries) or 1.
    Returns cos and sin [positions, 1, heads + 2, head_dim] and swap [head_dim] (int64)."""
    positions, rotary_dim = frequencies.shape
    half = rotary_dim // 2
    cos, sin = torch.cos(frequencies).to(dtype), torch.sin(frequencies).to(dtype)
    slots = query_heads + 2
    cos_table = torch.ones(positions, slots, head_dim, dtype=dtype, device=frequencies.device)
    sin_table = torch.zeros(positions, slots, head_dim, dtype=dtype, device=frequencies.device)
    cos_table[:, : query_heads + 1, :rotary_dim] = cos.unsqueeze(1)
    sin_table[:, : query_heads + 1, :rotary_dim] = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).unsqueeze(1)
    cos_table[:, :query_heads] *= query_scale
    sin_table[:, :query_heads] *= query_scale
    swap = torch.arange(head_dim, device=frequencies.device)
    swap[:rotary_dim] = torch.cat((swap[half:rotary_dim], swap[:half]))
    return cos_table.unsqueeze(1), sin_table.unsqueeze(1), swap


class CachedDecoder:
    """See the module docstring. `model` is a bare GPTModel that `cached_decoder_unsupported` accepts."""

    name = "cached"
    can_select_rows = True
    uses_module_forward = False  # reads the parameters itself: no dropout, the modules' mode is irrelevant

    def __init__(self, model):
        self.model = model
        attention = model.decoder.layers[0].self_attention
        self.world_size = attention.world_size
        self.group = _tensor_parallel_group(self.world_size)
        self.heads = attention.num_attention_heads_per_partition
        self.groups = attention.num_query_groups_per_partition
        self.heads_per_group = self.heads // self.groups
        self.head_dim = attention.hidden_size_per_attention_head
        self.scale = attention.core_attention.softmax_scale
        # A power-of-two scale is applied exactly by the queries' rotary tables; any other one to
        # the scores, as before (the same rounding either way).
        self.score_scale = None if _is_power_of_two(self.scale) else self.scale
        self.embedding = model.embedding.word_embeddings
        self.reason = ""
        # Per layer [b, groups, max_length, 2, head_dim]: rotated keys (0) and values (1) side by side,
        # so that one copy writes both and one index_select moves both.
        self.cache: list[torch.Tensor] = []
        self.layers: list[tuple] = []
        self.cos = self.sin = self.swap = None

    def start(self, batch_size: int, max_length: int) -> None:
        """A fresh cache for `batch_size` rows of up to `max_length` positions (and the layers'
        current parameters, looked up once per batch rather than per token)."""
        model = self.model
        weight = self.embedding.weight
        shape = (batch_size, self.groups, max_length, 2, self.head_dim)
        self.cache = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in model.decoder.layers]
        self.layers = [
            (
                layer.input_layernorm,
                layer.self_attention.linear_qkv.weight,
                layer.self_attention.linear_proj.weight,
                layer.pre_mlp_layernorm,
                layer.mlp.linear_fc1.weight,
                layer.mlp.linear_fc2.weight,
            )
            for layer in model.decoder.layers
        ]
        self.final_norm = model.decoder.final_layernorm
        self.output_weight = (
            model.shared_embedding_or_output_weight()
            if model.share_embeddings_and_output_weights
            else model.output_layer.weight
        )
        # megatron's tables: freqs [max_length, 1, 1, rotary_dim] from the model's own module.
        frequencies = model.rotary_pos_emb(max_length).view(max_length, -1)
        self.cos, self.sin, self.swap = rotary_tables(
            frequencies, self.head_dim, self.heads_per_group, 1.0 if self.score_scale else self.scale, weight.dtype
        )
        self.rotary_dim = frequencies.shape[-1]

    def _swapped(self, mixed: torch.Tensor) -> torch.Tensor:
        """mixed[..., self.swap] (see rotary_tables) as a concatenation of slices: the same values,
        but for the many positions of a prefill or a training chunk several times cheaper than
        index_select along the innermost axis, and so is its backward (slices of the gradient
        instead of a scatter-add). The decode step, a few values per row, keeps index_select."""
        half, rotary = self.rotary_dim // 2, self.rotary_dim
        parts = [mixed[..., half:rotary], mixed[..., :half]]
        if rotary < mixed.shape[-1]:
            parts.append(mixed[..., rotary:])
        return torch.cat(parts, dim=-1)

    def select_rows(self, index: torch.Tensor) -> bool:
        """The cache's rows become rows `index` of the current cache (a subset to drop finished
        rows, repeats to share one prompt's prefill); True: this decoder can select rows."""
        self.cache = [cache.index_select(0, index) for cache in self.cache]
        return True

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.group is not None:
            dist.all_reduce(tensor, group=self.group)
        return tensor

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        embedding = self.embedding
        if self.group is None:
            return F.embedding(tokens, embedding.weight)
        outside = (tokens < embedding.vocab_start_index) | (tokens >= embedding.vocab_end_index)
        local = (tokens - embedding.vocab_start_index).masked_fill(outside, 0)
        hidden = F.embedding(local, embedding.weight)
        hidden[outside, :] = 0.0
        return self._all_reduce(hidden)

    def _output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.output_weight)
        if self.group is None:
            return logits
        shards = [torch.empty_like(logits) for _ in range(self.world_size)]
        dist.all_gather(shards, logits.contiguous(), group=self.group)
        return torch.cat(shards, dim=-1)

    def _future(self, length: int) -> torch.Tensor:
        """[length, 1, length] True where a query position would see a later key."""
        positions = torch.arange(length, device=self.embedding.weight.device)
        return positions.view(length, 1, 1) < positions.view(1, 1, length)

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Logits [b, V_padded] at the last of the positions [start, start + s) of tokens [b, s];
        the cache holds positions [0, start) of every row. Several tokens only from position 0
        (the prefill, causal attention); one token per row afterwards (attention over the cache)."""
        batch, length = tokens.shape
        if length > 1 and start != 0:
            raise ValueError("the cached decoder takes several tokens per row only from position 0")
        if length == 1 and start > 0:
            return self._decode_step(tokens, start)
        end = start + length
        groups, per_group, head_dim = self.groups, self.heads_per_group, self.head_dim
        # [s, 1, heads of a group + 2, head_dim]: broadcast over [b, s, groups, heads + key + value, head_dim].
        cos, sin = self.cos[start:end], self.sin[start:end]
        hidden = self._embed(tokens)
        for (norm, qkv_weight, proj_weight, mlp_norm, fc1_weight, fc2_weight), cache in zip(self.layers, self.cache):
            # megatron's layout of the fused projection: per query group, its query heads, a key, a value.
            mixed = F.linear(_norm(norm, hidden), qkv_weight).view(batch, length, groups, per_group + 2, head_dim)
            # Queries and keys take the rotary embedding (keys are cached rotated; values pass unchanged).
            rotated = mixed * cos + self._swapped(mixed) * sin
            cache[:, :, start:end] = rotated[:, :, :, per_group:].transpose(1, 2)
            # Each query group against its own keys (grouped-query attention without repeating keys):
            # queries [b, groups, s x heads of a group, head_dim], keys [b, groups, end, head_dim].
            query = rotated[:, :, :, :per_group].permute(0, 2, 1, 3, 4).reshape(batch, groups, -1, head_dim)
            scores = torch.matmul(query, cache[:, :, :end, 0].transpose(-1, -2))
            if self.score_scale is not None:
                scores = scores * self.score_scale
            if length > 1:  # the prefill: causal within the prompt
                scores = (
                    scores.view(batch, groups, length, per_group, end)
                    .masked_fill(self._future(length), float("-inf"))
                    .view(batch, groups, length * per_group, end)
                )
            attended = torch.matmul(torch.softmax(scores, dim=-1), cache[:, :, :end, 1])
            if length > 1:
                attended = attended.view(batch, groups, length, per_group, head_dim).transpose(1, 2)
            attended = attended.reshape(batch, length, self.heads * head_dim)
            hidden = hidden + self._all_reduce(F.linear(attended, proj_weight))
            gate, up = torch.chunk(F.linear(_norm(mlp_norm, hidden), fc1_weight), 2, dim=-1)
            hidden = hidden + self._all_reduce(F.linear(F.silu(gate) * up, fc2_weight))
        return self._output_logits(_norm(self.final_norm, hidden[:, -1]))

    def _decode_step(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """`forward` for one token per row (tokens [b, 1] at position start > 0), written for that
        shape: hidden states [b, h] and per-layer tensors without a sequence axis, so a step
        makes about a tenth fewer torch calls (the same operations on the same values)."""
        batch = tokens.shape[0]
        per_group, swap, end = self.heads_per_group, self.swap, start + 1
        cos, sin = self.cos[start], self.sin[start]  # [1, heads of a group + 2, head_dim]
        hidden = self._embed(tokens.view(batch))
        for (norm, qkv_weight, proj_weight, mlp_norm, fc1_weight, fc2_weight), cache in zip(self.layers, self.cache):
            mixed = F.linear(_norm(norm, hidden), qkv_weight).view(batch, self.groups, per_group + 2, self.head_dim)
            rotated = mixed * cos + mixed.index_select(-1, swap) * sin
            cache[:, :, start] = rotated[:, :, per_group:]
            # [b, groups, heads of a group, head_dim] x [b, groups, head_dim, end]
            scores = torch.matmul(rotated[:, :, :per_group], cache[:, :, :end, 0].transpose(-1, -2))
            if self.score_scale is not None:
                scores = scores * self.score_scale
            attended = torch.matmul(torch.softmax(scores, dim=-1), cache[:, :, :end, 1]).view(batch, -1)
            hidden = hidden + self._all_reduce(F.linear(attended, proj_weight))
            gate, up = torch.chunk(F.linear(_norm(mlp_norm, hidden), fc1_weight), 2, dim=-1)
            hidden = hidden + self._all_reduce(F.linear(F.silu(gate) * up, fc2_weight))
        return self._output_logits(_norm(self.final_norm, hidden))

    @torch.no_grad()
    def sequence_log_probs(
        self, tokens: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor, temperature: float, vocab_size: int
    ) -> torch.Tensor:
        """log pi(labels) [n, s] of whole sequences tokens [n, s] at the `selected` positions ([n, s]
        bool), 0 elsewhere: what a forward pass of the model and generation/logprobs.py compute
        there (see selected_logits)."""
        output = torch.zeros(selected.shape, dtype=torch.float32, device=self.embedding.weight.device)
        if not selected.any():
            return output
        logits, rows, positions = self.selected_logits(tokens, selected)
        values = full_vocab_log_probs(logits, temperature, vocab_size)
        values = values.gather(-1, labels[rows, positions].unsqueeze(-1)).squeeze(-1)
        return output.index_put((rows, positions), values)

    def sequence_logits(self, tokens: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """The model's logits [n, s, V_padded] at the `selected` positions of tokens [n, s] (0
        elsewhere), differentiable with respect to the parameters: a training forward pass for
        losses read only there (GRPO's), with the prompts' shared prefill (see selected_logits).
        At least one position must be selected."""
        logits, rows, positions = self.selected_logits(tokens, selected)
        output = logits.new_zeros((*selected.shape, logits.shape[-1]))
        return output.index_put((rows, positions), logits)

    def selected_logits(
        self, tokens: torch.Tensor, selected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [m, V_padded], rows [m], positions [m]) at the m `selected` positions of whole
        sequences tokens [n, s] (some selected). Only positions from a row's first selected one on
        are read, so a row is its prefix (the positions before that: GRPO's prompt) and a chunk up
        to its last selected position; rows with the same prefix (the G samples of a question)
        share one prefill, and every chunk attends to its prefix's cached keys and causally within
        itself. Cost: O((distinct prefixes x prefix length + rows x chunk length) x parameters)
        instead of O(rows x s x parameters), plus attention over prefix + chunk keys per chunk
        token; under autograd the backward pass costs about twice that."""
        device = self.embedding.weight.device
        rows = selected.any(dim=1).nonzero().squeeze(-1)
        length = tokens.shape[1]
        picked = selected[rows]
        first = picked.float().argmax(dim=1)  # the first selected position of each row
        last = length - 1 - picked.flip(1).float().argmax(dim=1)
        chunk = int((last - first).max()) + 1
        prefixes: dict[tuple, int] = {}
        prefix_of = [
            prefixes.setdefault(tuple(row[:start]), len(prefixes))
            for row, start in zip(tokens[rows].tolist(), first.tolist())
        ]
        widest = max(len(prefix) for prefix in prefixes)
        self.start(len(prefixes), int(first.max()) + chunk)
        if widest:  # one prefill of the distinct prefixes (right-padded: causal, the padding is never read)
            prefill = torch.zeros(len(prefixes), widest, dtype=torch.long, device=device)
            for index, prefix in enumerate(prefixes):
                prefill[index, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
            self.forward(prefill, 0)
        source = torch.tensor(prefix_of, device=device)
        offsets = torch.arange(chunk, device=device)
        positions = first.unsqueeze(1) + offsets  # [n, chunk]: absolute positions of the chunk
        inside = positions.clamp(max=length - 1)  # beyond the sequence: after every selected position, unread
        chunk_tokens = tokens[rows.unsqueeze(1), inside]
        # Keys a chunk query may see: its prefix's (not the padding of a shorter one) and the chunk's up to itself.
        sees_prefix = (torch.arange(widest, device=device).unsqueeze(0) < first.unsqueeze(1)).unsqueeze(1)
        sees_chunk = (offsets.view(1, chunk) <= offsets.view(chunk, 1)).unsqueeze(0)
        visible = torch.cat((sees_prefix.expand(-1, chunk, -1), sees_chunk.expand(rows.numel(), -1, -1)), dim=-1).view(
            rows.numel(), 1, chunk, 1, widest + chunk
        )
        hidden = self._chunk_hidden(chunk_tokens, positions, source, widest, visible)
        chosen = selected[rows.unsqueeze(1), inside] & (positions < length)
        logits = self._output_logits(_norm(self.final_norm, hidden[chosen]))
        return logits, rows.unsqueeze(1).expand(-1, chunk)[chosen], positions[chosen]

    def _chunk_hidden(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        source: torch.Tensor,
        widest: int,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """The last layer's hidden states [n, c, h] of chunks tokens [n, c] at `positions` [n, c], each
        row attending to the first `widest` cached positions of cache row source[n] and to its own
        chunk, where `visible` [n, 1, c, 1, widest + c] allows."""
        batch, length = tokens.shape
        groups, per_group, head_dim = self.groups, self.heads_per_group, self.head_dim
        # [n, c, 1, heads of a group + 2, head_dim]: broadcast over [n, c, groups, heads + key + value, head_dim].
        cos, sin = self.cos[positions], self.sin[positions]
        hidden = self._embed(tokens)
        for (norm, qkv_weight, proj_weight, mlp_norm, fc1_weight, fc2_weight), cache in zip(self.layers, self.cache):
            mixed = F.linear(_norm(norm, hidden), qkv_weight).view(batch, length, groups, per_group + 2, head_dim)
            rotated = mixed * cos + self._swapped(mixed) * sin
            # [n, groups, widest + c, 2, head_dim]: the prefix's cached keys and values, then the chunk's.
            kv = torch.cat((cache[source, :, :widest], rotated[:, :, :, per_group:].transpose(1, 2)), dim=2)
            query = rotated[:, :, :, :per_group].permute(0, 2, 1, 3, 4).reshape(batch, groups, -1, head_dim)
            # unbind, not two selects: under autograd its backward stacks the two gradients in one
            # copy, where each select's would fill a zeroed kv-sized tensor and then add them.
            keys, values = kv.unbind(3)
            scores = torch.matmul(query, keys.transpose(-1, -2))
            if self.score_scale is not None:
                scores = scores * self.score_scale
            scores = (
                scores.view(batch, groups, length, per_group, -1)
                .masked_fill(~visible, float("-inf"))
                .view(batch, groups, length * per_group, -1)
            )
            attended = torch.matmul(torch.softmax(scores, dim=-1), values)
            attended = attended.view(batch, groups, length, per_group, head_dim).transpose(1, 2)
            attended = attended.reshape(batch, length, self.heads * head_dim)
            hidden = hidden + self._all_reduce(F.linear(attended, proj_weight))
            gate, up = torch.chunk(F.linear(_norm(mlp_norm, hidden), fc1_weight), 2, dim=-1)
            hidden = hidden + self._all_reduce(F.linear(F.silu(gate) * up, fc2_weight))
        return hidden


class MegatronStaticDecoder:
    """megatron-core's static inference path (`StaticInferenceContext`): the model's own forward
    with its KV cache. Used where CachedDecoder does not cover the model, and as its reference."""

    name = "megatron_static"
    can_select_rows = False
    uses_module_forward = True  # the model's forward: evaluation mode (no dropout) is needed

    def __init__(self, model, reason: str = ""):
        self.model = model
        self.reason = reason
        self.context = None

    def start(self, batch_size: int, max_length: int) -> None:
        self.context = StaticInferenceContext(batch_size, max_length)

    def select_rows(self, index: torch.Tensor) -> bool:
        return False  # the static context keeps its batch: every row is prefilled and decoded to the end

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        batch, length = tokens.shape
        positions = torch.arange(start, start + length, device=tokens.device).unsqueeze(0).expand(batch, -1)
        if start == 0:
            self.context.enable_prefill_mode()
        else:
            self.context.enable_decode_mode()
        logits = self.model(tokens, positions, None, inference_context=self.context, runtime_gather_output=True)
        self.context.increment_sequence_len_offset(length)
        return logits[:, -1, :]


def build_decoder(model, prefer: str = "auto"):
    """CachedDecoder for `model` (a bare GPTModel) when it covers it, else megatron's static path.
    prefer: auto | cached | megatron_static ("cached" raises when the model is not covered)."""
    if prefer == "megatron_static":
        decoder = MegatronStaticDecoder(model, "asked for")
        return decoder
    reason = cached_decoder_unsupported(model)
    if reason is None:
        decoder = CachedDecoder(model)
        decoder.reason = "the local layer spec"
        return decoder
    if prefer == "cached":
        raise ValueError(f"the cached decoder does not cover this model: {reason}")
    return MegatronStaticDecoder(model, reason)
