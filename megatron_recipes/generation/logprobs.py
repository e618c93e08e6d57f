"""Token log-probabilities and entropy from (tensor-parallel) logits: the policy distribution that
the sampler draws from and that GRPO trains, defined once so that both agree.

The policy distribution at temperature T over the model's real vocabulary is

    pi(v | context) = softmax(logits / T)[v]   for v < vocab_size,   0 for the padding rows

(the embedding is padded to a multiple of 128 x TP; padding rows are never sampled nor scored).
T = 1 for greedy decoding. With tensor parallelism each rank holds a vocabulary shard
[..., V / TP] of the logits; every function here is exact over the shards (max, sum of
exponentials and sums are all-reduced over the tensor-parallel group), with gradients through
megatron's `vocab_parallel_cross_entropy`.

    mask_padded_vocab(logits_shard, vocab_size) -> logits_shard with padding rows at -1e9
    vocab_parallel_log_probs(logits_shard, labels, temperature, vocab_size) -> [b, s] (differentiable)
    vocab_parallel_entropy(logits_shard, temperature, vocab_size) -> [b, s] (no gradient)
    full_vocab_log_probs(logits, temperature, vocab_size) -> [b, V] log-softmax of gathered logits

Cost: O(tokens x vocabulary shard) per call plus three small all-reduces per call with TP > 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

# Finite, so that 0 x log(0) terms stay 0 instead of NaN; exp(-1e9 - max) is exactly 0 in fp32.
PADDING_LOGIT = -1e9


def _tensor_parallel():
    if not parallel_state.model_parallel_is_initialized():
        return None, 0, 1
    return (
        parallel_state.get_tensor_model_parallel_group(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
    )


def mask_padded_vocab(logits_shard: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A copy of `logits_shard` [..., V/TP] (float32) whose padding rows (global id >= vocab_size)
    hold PADDING_LOGIT."""
    _, rank, _ = _tensor_parallel()
    shard = logits_shard.shape[-1]
    first = rank * shard
    logits = logits_shard.float().clone() if logits_shard.dtype == torch.float32 else logits_shard.float()
    if first + shard > vocab_size:
        start = max(vocab_size - first, 0)
        logits[..., start:] = PADDING_LOGIT
    return logits


def vocab_parallel_log_probs(
    logits_shard: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, vocab_size: int | None = None
) -> torch.Tensor:
    """log pi(labels) at `temperature`: logits_shard [b, s, V/TP], labels [b, s] -> [b, s] float32,
    differentiable with respect to the logits."""
    logits = mask_padded_vocab(logits_shard, vocab_size) if vocab_size is not None else logits_shard.float().clone()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    # megatron's kernel subtracts the max in place: it gets its own tensor (made above).
    return -vocab_parallel_cross_entropy(logits, labels)


@torch.no_grad()
def vocab_parallel_entropy(
    logits_shard: torch.Tensor, temperature: float = 1.0, vocab_size: int | None = None
) -> torch.Tensor:
    """Entropy of pi at each position: logits_shard [b, s, V/TP] -> [b, s] float32 (no gradient)."""
    group, _, world = _tensor_parallel()
    logits = mask_padded_vocab(logits_shard, vocab_size) if vocab_size is not None else logits_shard.float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    maximum = logits.max(dim=-1).values
    if world > 1:
        dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
    shifted = logits - maximum.unsqueeze(-1)
    exponentials = shifted.exp()
    sums = torch.stack([exponentials.sum(dim=-1), (exponentials * shifted).sum(dim=-1)])
    if world > 1:
        dist.all_reduce(sums, group=group)
    normaliser, weighted = sums[0], sums[1]
    # H = log Z - E[shifted] with Z = sum exp(shifted).
    return normaliser.log() - weighted / normaliser


def full_vocab_log_probs(logits: torch.Tensor, temperature: float, vocab_size: int) -> torch.Tensor:
    """log pi over the whole (gathered) vocabulary: logits [b, V_padded] -> [b, V_padded] float32."""
    logits = logits.float().clone()
    logits[..., vocab_size:] = PADDING_LOGIT
    if temperature and temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)
