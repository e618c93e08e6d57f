"""The `reward_model` section of `python -m megatron_recipes.reward_model` (what to train, on
which data) and the `label` section of `python -m megatron_recipes.label_steps` (how samples are
labelled). Names are checked against reward_models.kinds and label methods below."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_recipes.reward_models.kinds import get_reward_model_kind, labelled_kinds
from megatron_recipes.rewards.functions import REWARD_FUNCTIONS
from stack_common.checks import (
    require_at_least,
    require_choice,
    require_fraction,
    require_not_empty,
    require_range,
)
from stack_common.errors import ConfigError

# How label_steps labels each sampled solution: the rule-based outcome only (ORM data), or
# Math-Shepherd's step labels from completions as well (PRM data).
LABEL_METHODS = ("outcome", "math_shepherd")
# Which Math-Shepherd label a step_labels field holds.
STEP_LABEL_KINDS = ("soft", "hard")
# Where an ORM reads its one score (reward_models/data.py): at the response's last token, or the
# product of per-step probabilities read at the step ends (multiple-instance learning from the
# outcome label alone: a response is right only when every step is).
OUTCOME_POOLINGS = ("last_token", "step_product")


@dataclass
class RewardModelSettings:
    """What the reward-model recipe trains (reward_models/data.py documents the record format).

    kind: orm (one score per response, label `outcome_field`) or prm (one score per step,
    labels `step_label_field`, steps separated by `step_separator`). Binary cross-entropy on the
    scored positions; a label may be a probability (Math-Shepherd's soft labels).
    Held-out split: `validation_paths` when given, else `validation_fraction` of the questions
    (all records of a question fall on one side, in the training and the replay data alike; the
    two sides never share a question, which is checked).
    Iterative RL: each global batch holds exactly replay_fraction x trainer.global_batch_size
    records drawn from `replay_paths` (the earlier iterations' data), the rest from `train_paths`.
    """

    kind: str = "orm"
    # JSONL files, or directories (every *.jsonl below them).
    train_paths: list[str] = field(default_factory=list)
    replay_paths: list[str] = field(default_factory=list)
    replay_fraction: float = 0.0
    validation_paths: list[str] = field(default_factory=list)
    validation_fraction: float = 0.1
    outcome_field: str = "correct"
    step_label_field: str = "step_labels"
    # The held-out records' step labels (null = step_label_field): e.g. train on Math-Shepherd's
    # automatic labels and measure against ground-truth ones.
    validation_step_label_field: str | None = None
    step_separator: str = "\n"
    # ORM only: last_token (the score at the response's last token) or step_product (P(correct) =
    # the product of sigmoid(score) at the step ends, trained with binary cross-entropy on the
    # outcome label: the model learns which step is wrong without step labels).
    outcome_pooling: str = "last_token"
    # Prompt + response tokens longer than this are dropped (counted, written to dead_letter.jsonl).
    seq_length: int = 1024
    # Held-out loss, accuracy and AUC every trainer.eval_interval steps, at step 0 and at the end.
    seed: int = 1234

    def validate(self) -> None:
        require_choice("reward_model.kind", self.kind, labelled_kinds())
        require_not_empty("reward_model.train_paths", self.train_paths, "give JSONL files of labelled responses")
        require_fraction("reward_model.replay_fraction", self.replay_fraction)
        require_choice("reward_model.outcome_pooling", self.outcome_pooling, OUTCOME_POOLINGS)
        if self.outcome_pooling != "last_token" and get_reward_model_kind(self.kind).per_step:
            raise ConfigError(
                f"reward_model.outcome_pooling={self.outcome_pooling} is for kind=orm; a {self.kind} scores every step"
            )
        if self.outcome_pooling == "step_product" and not self.step_separator:
            raise ConfigError("reward_model.step_separator must not be empty for outcome_pooling=step_product")
        if self.replay_fraction and not self.replay_paths:
            raise ConfigError(
                f"reward_model.replay_fraction={self.replay_fraction} needs reward_model.replay_paths (earlier data)"
            )
        require_range("reward_model.validation_fraction", self.validation_fraction, 0, 1, high_inclusive=False)
        require_at_least("reward_model.seq_length", self.seq_length, 2)
        if get_reward_model_kind(self.kind).per_step and not self.step_separator:
            raise ConfigError("reward_model.step_separator must not be empty for kind=prm")

    def replayed_per_batch(self, global_batch_size: int) -> int:
        """Records of each global batch drawn from the replay data; the fraction must be exact."""
        replayed = self.replay_fraction * global_batch_size
        if abs(replayed - round(replayed)) > 1e-9:
            raise ConfigError(
                f"reward_model.replay_fraction={self.replay_fraction} x trainer.global_batch_size={global_batch_size}"
                f" = {replayed:g} is not a whole number of records: pick a batch size that makes it exact"
            )
        if round(replayed) >= global_batch_size and global_batch_size > 0:
            raise ConfigError("reward_model.replay_fraction leaves no new records in a batch: keep it below 1")
        return int(round(replayed))


@dataclass
class LabelConfig:
    """How `python -m megatron_recipes.label_steps` labels sampled solutions.

    method=outcome: each solution's final answer is checked (rule-based) -> `correct`.
    method=math_shepherd: also, for each step prefix of each solution, the completer samples
    `completions` continuations; a step's hard label is 1 when any of them reaches the reference
    answer, its soft label the fraction that do (Math-Shepherd, arXiv:2312.08935). `step_labels`
    holds the `step_label` kind; both are always written (`hard_step_labels`, `soft_step_labels`).
    """

    method: str = "outcome"
    # The rule-based check of a final answer (a name of megatron_recipes.rewards).
    reward: str = "math_accuracy"
    completions: int = 8
    step_label: str = "soft"
    step_separator: str = "\n"
    completion_temperature: float = 1.0
    completion_max_new_tokens: int = 256

    def validate(self) -> None:
        require_choice("label.method", self.method, LABEL_METHODS)
        require_choice("label.reward", self.reward, sorted(REWARD_FUNCTIONS))
        require_at_least("label.completions", self.completions, 1)
        require_choice("label.step_label", self.step_label, STEP_LABEL_KINDS)
        if not self.step_separator:
            raise ConfigError("label.step_separator must not be empty")
        require_range("label.completion_temperature", self.completion_temperature, 0, 10)
        require_at_least("label.completion_max_new_tokens", self.completion_max_new_tokens, 1)
