"""Reward-model loss and metrics, each with a small readable reference beside it.

    numerator, denominator, metrics = reward_loss(scores, targets, mask)
    roc_auc(scores, labels) -> float       # area under the ROC curve (ties count one half)

Shapes: scores (logits) / targets / mask are [b, s] float; the loss is binary cross-entropy with
logits summed over the positions where mask is 1 (a response's last token for an ORM, its step
ends for a PRM), divided by the number of those positions over the whole global batch (the
training loop's per-token normalisation, so every layout computes the same number). Targets may
be probabilities (Math-Shepherd's soft labels). Metrics (sum, count): accuracy (the sign of the
logit agrees with target >= 0.5), positive (the mean target), score (the mean logit).

ORM with outcome_pooling=step_product (`pooled_outcome_loss`): the masked positions are a
response's step ends; P(correct) = the product of their sigmoids, and the loss is the binary
cross-entropy of P against the response's label, per response.

AUC: labels are binarised at 0.5; computed from ranks (Mann-Whitney U) with tied scores given
their average rank, O(n log n). NaN when one class is absent.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def reward_loss(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    mask = mask.to(scores.dtype)
    targets = targets.to(scores.dtype)
    per_position = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    count = mask.sum()
    agree = ((scores > 0) == (targets >= 0.5)).to(scores.dtype)
    metrics = {
        "accuracy": torch.stack([(agree * mask).sum().detach(), count.detach()]),
        "positive": torch.stack([(targets * mask).sum().detach(), count.detach()]),
        "score": torch.stack([(scores.detach() * mask).sum(), count.detach()]),
    }
    return (per_position * mask).sum(), count.to(torch.int), metrics


def pooled_log_probabilities(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(correct), log P(wrong)) per row [b] of an ORM with outcome_pooling=step_product:
    P(correct) = prod over the row's masked positions of sigmoid(score) (a response is right only
    when every step is right). log P(wrong) = log(1 - P(correct)), computed without cancellation."""
    log_right = (torch.nn.functional.logsigmoid(scores) * mask).sum(-1)
    # P(correct) within 1e-4 of 1 is taken as 1 - 1e-4 (log(0) otherwise), the gradient kept: a
    # confidently passed wrong response must still be pushed down.
    capped = log_right + (log_right.clamp(max=-1e-4) - log_right).detach()
    # log(1 - e^x): -expm1 near 0, log1p(-exp) further away (both accurate there).
    log_wrong = torch.where(
        capped > -0.6931, torch.log(-torch.expm1(capped)), torch.log1p(-torch.exp(capped.clamp(max=-0.6931)))
    )
    return log_right, log_wrong


def pooled_outcome_loss(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """`reward_loss` of an ORM with outcome_pooling=step_product: binary cross-entropy of each row's
    pooled P(correct) (pooled_log_probabilities) against its outcome label (the target at its
    scored positions), summed over rows with a scored position, divided by their number. The
    gradient blames a wrong response's least likely steps most (d log(1 - P) / d score_k is
    proportional to 1 - sigmoid(score_k)). Metrics as reward_loss's, per row; score is the logit
    of P(correct)."""
    mask = mask.to(scores.dtype)
    targets = targets.to(scores.dtype)
    rows = (mask.sum(-1) > 0).to(scores.dtype)
    label = (targets * mask).amax(-1)
    log_right, log_wrong = pooled_log_probabilities(scores, mask)
    per_row = -(label * log_right + (1.0 - label) * log_wrong)
    count = rows.sum()
    logit = log_right - log_wrong
    agree = ((logit > 0) == (label >= 0.5)).to(scores.dtype)
    metrics = {
        "accuracy": torch.stack([(agree * rows).sum().detach(), count.detach()]),
        "positive": torch.stack([(label * rows).sum().detach(), count.detach()]),
        "score": torch.stack([(logit.detach() * rows).sum(), count.detach()]),
    }
    return (per_row * rows).sum(), count.to(torch.int), metrics


def reference_pooled_outcome_loss(
    scores: list[list[float]], targets: list[list[float]], mask: list[list[float]]
) -> float:
    """Readable reference of `pooled_outcome_loss`: per row, P = the product of the sigmoids of
    the masked scores; the mean binary cross-entropy of P against the row's label."""
    terms = []
    for score_row, target_row, mask_row in zip(scores, targets, mask):
        kept = [(score, target) for score, target, keep in zip(score_row, target_row, mask_row) if keep]
        if not kept:
            continue
        probability = math.prod(1.0 / (1.0 + math.exp(-score)) for score, _ in kept)
        label = max(target for _, target in kept)
        terms.append(-(label * math.log(probability) + (1.0 - label) * math.log(1.0 - probability)))
    return sum(terms) / len(terms)


def reference_reward_loss(scores: list[list[float]], targets: list[list[float]], mask: list[list[float]]) -> float:
    """Readable reference of `reward_loss`: the mean binary cross-entropy over masked positions."""
    terms = []
    for score_row, target_row, mask_row in zip(scores, targets, mask):
        for score, target, keep in zip(score_row, target_row, mask_row):
            if keep:
                probability = 1.0 / (1.0 + math.exp(-score))
                terms.append(-(target * math.log(probability) + (1.0 - target) * math.log(1.0 - probability)))
    return sum(terms) / len(terms)


def roc_auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (>= 0.5 positive); see module docstring."""
    values = torch.as_tensor(list(scores), dtype=torch.float64)
    positive = torch.as_tensor(list(labels), dtype=torch.float64) >= 0.5
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    # Average the ranks of tied scores.
    unique, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    if len(unique) < len(values):
        ends = counts.cumsum(0).to(torch.float64)
        average = ends - (counts.to(torch.float64) - 1) / 2
        ranks[order] = average[inverse]
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def reference_roc_auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Readable reference of `roc_auc`: the fraction of (positive, negative) pairs ordered right."""
    positive = [s for s, label in zip(scores, labels) if label >= 0.5]
    negative = [s for s, label in zip(scores, labels) if label < 0.5]
    if not positive or not negative:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    return wins / (len(positive) * len(negative))
