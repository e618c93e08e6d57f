"""The scalar-head model of reward models (ORM, PRM) and of PPO's critic: a megatron-core GPTModel
whose vocabulary projection is replaced by one bias-free linear unit on the final hidden states.

    chunks = build_reward_model(model_config, parallelism, vocab_size, device, precision, fp8, kind="orm")
    scores = reward_forward(chunk, {"tokens": [b, s], "position_ids": [b, s]})   # [b, s] float32 logits
    load_model_weights(policy_checkpoint, chunks, new_modules=NEW_MODULES)      # init from a policy

`RewardModel` is GPTModel with the same embedding, decoder and final norm (so a policy or base
checkpoint loads into it unchanged, and its checkpoints share every key but the head); on the
last pipeline stage its `output_layer` is removed and `reward_head.weight` [1, hidden] takes its
place (`score.weight` in Hugging Face). The forward pass of GPTModel is reused as it is; only its
post-processing is replaced: score[t] = w . h_t, one logit for every position t (the caller reads
the positions it needs: the last token for an ORM, step ends for a PRM, every response token for
a value function).

Parallelism: the head is replicated on every tensor-parallel rank and initialised from a fixed
seed (the same weights on every rank and at every layout). Without sequence parallelism every
tensor-parallel rank holds the full hidden states, computes the same scores and the same head
gradient. With sequence parallelism the hidden states are split along the sequence: each rank
scores its part, the scores are all-gathered (the backward pass keeps each rank's own part), and
the head's parameters are marked `sequence_parallel` so that megatron's finalize_model_grads
sums their partial gradients over the tensor-parallel group. Pipeline parallelism: only the last
stage has the head; other stages return hidden states as GPTModel does. Data parallelism: the
head is an ordinary replicated parameter.

Cost: a forward pass of the decoder plus hidden x tokens for the head (no vocabulary projection:
cheaper than the policy's forward, whose logits cost hidden x vocabulary per token).
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel import gather_from_sequence_parallel_region
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group

from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model
from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.runtime.config import ParallelismConfig

# Checkpoint keys of the head: absent from a policy's checkpoint, so initialised, not loaded.
NEW_MODULES = ("reward_head.",)
# Every rank draws the head's initial weights from this seed: identical at every layout.
HEAD_INIT_SEED = 20240205


class ScalarHead(torch.nn.Module):
    """score = hidden . w (no bias), on [s (or s/TP with sequence parallelism), b, h] -> [b, s] float32."""

    def __init__(self, config):
        super().__init__()
        self.sequence_parallel = bool(config.sequence_parallel)
        self.weight = torch.nn.Parameter(torch.empty(1, config.hidden_size, dtype=config.params_dtype))
        if self.weight.device.type != "meta" and config.perform_initialization:
            generator = torch.Generator().manual_seed(HEAD_INIT_SEED)
            initial = torch.randn(1, config.hidden_size, generator=generator) * config.init_method_std
            with torch.no_grad():
                self.weight.copy_(initial.to(self.weight.dtype))
        # finalize_model_grads sums the gradients of `sequence_parallel` parameters over TP.
        self.weight.sequence_parallel = self.sequence_parallel

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        scores = torch.nn.functional.linear(hidden_states, self.weight)
        if self.sequence_parallel:
            # Every rank computes the same loss from the gathered scores: its gradient is its own part.
            scores = gather_from_sequence_parallel_region(scores, tensor_parallel_output_grad=False)
        return scores.squeeze(-1).transpose(0, 1).float().contiguous()


class RewardModel(GPTModel):
    """GPTModel with a scalar head instead of the vocabulary projection (module docstring).
    `kind`: a name of reward_models.kinds (orm, prm, value); it only travels with the model."""

    def __init__(self, *args: Any, kind: str = "orm", **kwargs: Any):
        kwargs["share_embeddings_and_output_weights"] = False  # there is no output layer to tie
        super().__init__(*args, **kwargs)
        self.kind = get_reward_model_kind(kind).name
        if self.post_process:
            del self.output_layer
            self.reward_head = ScalarHead(self.config)

    def _postprocess(self, hidden_states, **_: Any):
        if not self.post_process:
            return hidden_states
        return self.reward_head(hidden_states)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None):
        """Every module's own sharded state (the head replicated over TP and DP), without the
        language model's fix-ups of an output layer this model does not have."""
        return MegatronModule.sharded_state_dict(
            self, prefix, sharded_offsets, ensure_metadata_has_dp_cp_group(metadata)
        )


def build_reward_model(
    model_config: ModelConfig,
    parallelism: ParallelismConfig,
    vocab_size: int,
    device: str = "cpu",
    precision: str = "fp32",
    fp8: str | None = None,
    kind: str = "orm",
    meta_device: bool = False,
) -> list:
    """This rank's RewardModel chunks (the signature of setup_training's `model_builder`, plus
    `kind`). Parallel groups must exist."""
    return build_model(
        model_config,
        parallelism,
        vocab_size,
        device=device,
        precision=precision,
        fp8=fp8,
        meta_device=meta_device,
        model_class=RewardModel,
        model_options={"kind": kind},
    )


def reward_forward(model_chunk, batch: dict) -> torch.Tensor:
    """Scores [b, s] (float32 logits) on the last pipeline stage, hidden states before it."""
    return model_chunk(batch["tokens"], batch["position_ids"], batch.get("attention_mask"))


__all__ = [
    "HEAD_INIT_SEED",
    "NEW_MODULES",
    "RewardModel",
    "ScalarHead",
    "build_reward_model",
    "reward_forward",
]
