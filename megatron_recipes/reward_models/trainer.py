"""The reward-model step on the shared training loop, and the held-out evaluation.

    trainer = RewardModelTrainer(session, batches, validation, pad_id, eval_interval)
    outcome = trainer.run()          # training/loop.run_loop over trainer.step
    metrics = evaluate_scores(model, examples, micro_batch_size, pad_id)   # loss, accuracy, auc

One step: global batch `state.iteration` of RewardBatches (new records and, in iterative RL, the
replayed ones), this data-parallel rank's share split into micro-batches, one `train_step` with
the binary cross-entropy of reward_models/objectives.py on the scored positions (an ORM with
outcome_pooling=step_product: on each response's pooled probability). Metrics per step
(console, metrics.jsonl, TensorBoard): loss, accuracy, positive (mean label), score (mean logit),
replay_fraction (replayed records / records, measured on the micro-batches that were trained,
over every data-parallel rank), lr, grad_norm. Held-out metrics (`validation_*` in
metrics.jsonl): loss, accuracy and auc over every scored position of the held-out set, at step
0, every `eval_interval` steps and at the end.

Cost per step: one forward and backward of B records; evaluation one forward pass of the set.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Sequence

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.reward_models.data import RewardBatches, RewardExample, evaluation_batches, micro_batches
from megatron_recipes.reward_models.model import reward_forward
from megatron_recipes.reward_models.objectives import (
    pooled_log_probabilities,
    pooled_outcome_loss,
    reward_loss,
    roc_auc,
)
from megatron_recipes.training.loop import StepRecord, TrainOutcome, forward_only, run_loop, train_step
from megatron_recipes.training.metrics import memory_gib

log = logging.getLogger(__name__)


def reward_loss_function(batch: dict, scores: torch.Tensor, outcome_pooling: str = "last_token"):
    """loss_fn(batch, scores) -> (numerator, denominator, metrics) for training/loop.train_step
    (bind outcome_pooling with functools.partial)."""
    loss = pooled_outcome_loss if outcome_pooling == "step_product" else reward_loss
    numerator, denominator, metrics = loss(scores, batch["targets"], batch["score_mask"])
    replayed = batch["replayed"].to(scores.dtype)
    rows = torch.tensor(float(replayed.numel()), dtype=scores.dtype, device=scores.device)
    metrics["replay_fraction"] = torch.stack([replayed.sum(), rows])
    return numerator, denominator, metrics


def sequence_multiple(session) -> int:
    """Padded lengths are multiples of this (sequence parallelism splits sequences over TP)."""
    return 8 * session.runtime.tensor_parallel_size


def _scored(batch: dict, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = batch["score_mask"] > 0
    return scores.detach()[keep].float().cpu(), batch["targets"][keep].float().cpu()


def _pooled(batch: dict, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per response with a scored position: the logit of its pooled P(correct), and its label."""
    mask = batch["score_mask"].to(scores.device, torch.float32)
    rows = mask.sum(-1) > 0
    log_right, log_wrong = pooled_log_probabilities(scores.detach().float(), mask)
    label = (batch["targets"].to(mask.device).float() * mask).amax(-1)
    return (log_right - log_wrong)[rows].cpu(), label[rows].cpu()


def gather_scores(outputs: list) -> tuple[list[float], list[float]]:
    """Every rank's (scores, targets) of the last pipeline stage's first tensor-parallel rank,
    gathered on every rank of the world (evaluation sets are small)."""
    contributes = parallel_state.is_pipeline_last_stage(ignore_virtual=True) and (
        parallel_state.get_tensor_model_parallel_rank() == 0
    )
    scores = [value for output in outputs for value in output[0].tolist()] if contributes else []
    targets = [value for output in outputs for value in output[1].tolist()] if contributes else []
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return scores, targets
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (scores, targets))
    return [s for part in gathered for s in part[0]], [t for part in gathered for t in part[1]]


def evaluate_scores(
    model,
    examples: Sequence[RewardExample],
    micro_batch_size: int,
    pad_id: int,
    multiple: int,
    outcome_pooling: str = "last_token",
) -> dict[str, float]:
    """Held-out loss, accuracy and AUC over every scored position of `examples` (all ranks); for
    an ORM with outcome_pooling=step_product over every response's pooled score."""
    read = _pooled if outcome_pooling == "step_product" else _scored
    rank = parallel_state.get_data_parallel_rank()
    ranks = parallel_state.get_data_parallel_world_size()
    outputs = []
    for group in evaluation_batches(examples, micro_batch_size, rank, ranks, pad_id, multiple):
        outputs += forward_only(model, group, read, forward_fn=reward_forward)
    scores, targets = gather_scores(outputs)
    if not scores:
        return {"loss": math.nan, "accuracy": math.nan, "auc": math.nan, "positions": 0}
    score_tensor, target_tensor = torch.tensor(scores), torch.tensor(targets)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(score_tensor, target_tensor)
    accuracy = ((score_tensor > 0) == (target_tensor >= 0.5)).float().mean()
    return {
        "loss": float(loss),
        "accuracy": float(accuracy),
        "auc": roc_auc(scores, targets),
        "positions": len(scores),
    }


class RewardModelTrainer:
    """See the module docstring. `session`: a TrainingSession of a RewardModel."""

    def __init__(
        self,
        session,
        batches: RewardBatches,
        validation: Sequence[RewardExample],
        pad_id: int,
        eval_interval: int,
        outcome_pooling: str = "last_token",
    ):
        self.session = session
        self.outcome_pooling = outcome_pooling
        self.batches = batches
        self.validation = list(validation)
        self.pad_id = pad_id
        self.eval_interval = eval_interval
        self.multiple = sequence_multiple(session)

    def step(self) -> StepRecord:
        session = self.session
        runtime = session.runtime
        started = time.perf_counter()
        items = self.batches.global_batch(session.state.iteration)
        micro = micro_batches(
            items,
            session.trainer.micro_batch_size,
            runtime.data_parallel_rank,
            runtime.data_parallel_size,
            self.pad_id,
            self.multiple,
        )
        loss_function = functools.partial(reward_loss_function, outcome_pooling=self.outcome_pooling)
        result = train_step(session, micro, loss_function, reward_forward)
        tokens = sum(len(example.tokens) for example, _ in items)
        values = {
            "loss": result.loss,
            "lr": result.learning_rate,
            "grad_norm": result.grad_norm,
            **result.metrics,
            "scored_positions": float(result.tokens),
            "step_seconds": time.perf_counter() - started,
            "tokens_per_second": tokens / max(time.perf_counter() - started, 1e-9),
            "memory_gib": memory_gib(runtime.device),
            "skipped": float(not result.update_successful),
        }
        return StepRecord(values, len(items), tokens)

    def evaluate(self) -> dict[str, float]:
        return evaluate_scores(
            self.session,
            self.validation,
            self.session.trainer.micro_batch_size,
            self.pad_id,
            self.multiple,
            self.outcome_pooling,
        )

    def run(self) -> TrainOutcome:
        total = self.session.trainer.train_steps

        def validation(iteration: int) -> dict[str, float] | None:
            due = iteration == 0 or iteration == total or (self.eval_interval and iteration % self.eval_interval == 0)
            return self.evaluate() if due else None

        return run_loop(self.session, self.step, validation=validation if self.validation else None)


__all__ = ["RewardModelTrainer", "evaluate_scores", "gather_scores", "reward_loss_function", "sequence_multiple"]
