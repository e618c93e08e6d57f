"""A trained reward model used beside the policy: scores of rollouts or of any (prompt, response).

    record = read_reward_model_record(checkpoint)        # kind, step separator, tokenizer (no torch)
    scorer = RewardModelScorer.load(checkpoint, parallelism, device, precision, micro_batch_size)
    scorer.score(items) -> list[list[float]]              # probabilities; see below

`items` are (prompt_ids, response_ids, response_text) triples (a trailing end-of-document token
is dropped, as the reward model was trained without it). For an ORM each result is [p], the
probability that the response is correct, read at the response's last token (an ORM trained
with outcome_pooling=step_product: the product of the probabilities read at its step ends); for
a PRM it is one
probability per step of `response_text` (split at the separator the PRM was trained with, each
read at the token completing the step: the positions reward_models/data.py trains on). An empty
response gets [] (no step; an ORM's caller treats it as 0).

The model is built at the caller's layout (tensor parallel like the policy; pipeline parallelism
is not used here) and loaded from the checkpoint at any layout it was saved at. Every rank of a
tensor-parallel group must call `score` with the same items (a collective forward pass); each
data-parallel rank scores its own.

Cost: one forward pass (no vocabulary projection) over the items, in micro-batches padded to
their longest item.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from megatron_recipes.reward_models.data import scored_positions
from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.model import build_reward_model, reward_forward
from megatron_recipes.runtime.seeds import capture_rng_state, restore_rng_state
from megatron_recipes.training.checkpointing import (
    CheckpointError,
    load_model_weights,
    model_config_from_checkpoint,
    read_checkpoint_info,
)
from megatron_recipes.training.loop import forward_only
from stack_common.errors import ConfigError


def read_reward_model_record(checkpoint: str) -> dict:
    """{kind, step_separator, tokenizer, vocab_size} of a reward model's checkpoint (one line
    ConfigError when it is not one)."""
    try:
        info = read_checkpoint_info(checkpoint)
    except (CheckpointError, FileNotFoundError) as error:
        raise ConfigError(f"reward model checkpoint {checkpoint}: {error}") from None
    record = dict(info.get("model_config") or {})
    kind = record.get("reward_model_kind")
    if not kind:
        raise ConfigError(
            f"{checkpoint} is not a reward model's checkpoint (its model_config has no reward_model_kind)"
        )
    get_reward_model_kind(kind)
    return {
        "kind": kind,
        "step_separator": record.get("step_separator", "\n"),
        "tokenizer": (info.get("train_state", {}).get("extra", {}) or {}).get("tokenizer", ""),
        "vocab_size": record.get("vocab_size"),
        "outcome_pooling": record.get("outcome_pooling", "last_token"),
    }


class RewardModelScorer:
    """See the module docstring."""

    def __init__(
        self,
        chunks: list,
        kind: str,
        separator: str,
        micro_batch_size: int,
        eod: int,
        decode,
        multiple: int,
        outcome_pooling: str = "last_token",
    ):
        self.chunks = chunks
        self.outcome_pooling = outcome_pooling
        self.kind = kind
        self.separator = separator
        self.micro_batch_size = micro_batch_size
        self.eod = eod
        self.decode = decode
        self.multiple = multiple

    @classmethod
    def load(
        cls,
        checkpoint: str,
        parallelism,
        device: str,
        precision: str,
        micro_batch_size: int,
        tokenizer,
    ) -> "RewardModelScorer":
        record = read_reward_model_record(checkpoint)
        model_config = model_config_from_checkpoint(checkpoint)
        vocab_size = int(record["vocab_size"])
        rng = capture_rng_state()  # building must not move the generators a resumed run restored
        chunks = build_reward_model(model_config, parallelism, vocab_size, device, precision, kind=record["kind"])
        restore_rng_state(rng)
        load_model_weights(checkpoint, chunks)
        for chunk in chunks:
            chunk.requires_grad_(False)
            chunk.eval()
        multiple = 8 * parallelism.tensor_model_parallel_size
        return cls(
            chunks,
            record["kind"],
            record["step_separator"],
            micro_batch_size,
            tokenizer.eod,
            tokenizer.decode,
            multiple,
            record["outcome_pooling"],
        )

    @property
    def per_step(self) -> bool:
        return get_reward_model_kind(self.kind).per_step

    def score(self, items: Sequence[tuple[Sequence[int], Sequence[int], str]]) -> list[list[float]]:
        rows, positions = [], []
        for prompt_ids, response_ids, text in items:
            response = list(response_ids)
            if response and response[-1] == self.eod:
                response = response[:-1]
            rows.append(list(prompt_ids) + response)
            positions.append(
                scored_positions(
                    self.kind, prompt_ids, response, text, self.separator, self.decode, self.outcome_pooling
                )
            )
        if not rows:
            return []
        longest = max(len(row) for row in rows)
        length = max(self.multiple, -(-longest // self.multiple) * self.multiple)
        micro_batches = []
        for start in range(0, len(rows), self.micro_batch_size):
            chunk = rows[start : start + self.micro_batch_size]
            tokens = torch.full((len(chunk), length), self.eod, dtype=torch.long)
            for index, row in enumerate(chunk):
                tokens[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            micro_batches.append(
                {
                    "tokens": tokens,
                    "position_ids": torch.arange(length).unsqueeze(0).expand(len(chunk), -1).contiguous(),
                }
            )
        outputs = forward_only(
            self.chunks, micro_batches, lambda batch, scores: scores.detach().float().cpu(), forward_fn=reward_forward
        )
        logits = torch.cat(outputs) if outputs else torch.empty(0, length)
        probabilities = [
            [_sigmoid(float(logits[row, p])) for p in row_positions] for row, row_positions in enumerate(positions)
        ]
        if self.outcome_pooling == "step_product":
            # One P(correct) per response: every step right (objectives.pooled_outcome_loss).
            return [[math.prod(steps)] if steps else [] for steps in probabilities]
        return probabilities


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))


__all__ = ["RewardModelScorer", "read_reward_model_record"]
