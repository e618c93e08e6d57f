"""The kinds of scalar-head models, registered by name (`reward_model.kind`, recorded in each
checkpoint's model_config as `reward_model_kind`). Torch-free: configs check names against it.

  orm    outcome reward model: one score per response, read at its last token (end-of-document
         excluded), trained on whether the final answer is correct; exported as Hugging Face
         LlamaForSequenceClassification (which pools the last non-padding token). With
         reward_model.outcome_pooling=step_product it reads a score at every step end instead,
         P(correct) = the product of their sigmoids, still trained on the outcome label only;
         such a checkpoint records outcome_pooling and exports as LlamaForTokenClassification
         (the reader multiplies the step-end probabilities).
  prm    process reward model: one score per reasoning step, read at the last token of each
         step; trained on per-step labels; exported as LlamaForTokenClassification.
  value  PPO's critic: a value for every response token (rl.advantage_estimator=gae); trained
         by the PPO loop, exported like a PRM (a score per token).
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_recipes.convert.architecture import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION


@dataclass(frozen=True)
class RewardModelKind:
    name: str
    hf_class: str  # the Hugging Face class its checkpoints export to
    per_step: bool  # scored at step ends (True) or once per response
    trained_on_labels: bool  # python -m megatron_recipes.reward_model trains it


REWARD_MODEL_KINDS: dict[str, RewardModelKind] = {}


def register_reward_model_kind(kind: RewardModelKind) -> RewardModelKind:
    REWARD_MODEL_KINDS[kind.name] = kind
    return kind


def get_reward_model_kind(name: str) -> RewardModelKind:
    try:
        return REWARD_MODEL_KINDS[name]
    except KeyError:
        raise KeyError(
            f"unknown reward model kind {name!r}; registered: {', '.join(sorted(REWARD_MODEL_KINDS))}"
        ) from None


def labelled_kinds() -> list[str]:
    """The kinds the reward-model recipe trains (on outcome or step labels)."""
    return sorted(name for name, kind in REWARD_MODEL_KINDS.items() if kind.trained_on_labels)


def kind_of_hf_class(hf_class: str) -> str:
    """The labelled kind a Hugging Face score-head class imports as."""
    for name in labelled_kinds():
        if REWARD_MODEL_KINDS[name].hf_class == hf_class:
            return name
    raise KeyError(f"no reward model kind exports to {hf_class}")


register_reward_model_kind(RewardModelKind("orm", SEQUENCE_CLASSIFICATION, per_step=False, trained_on_labels=True))
register_reward_model_kind(RewardModelKind("prm", TOKEN_CLASSIFICATION, per_step=True, trained_on_labels=True))
register_reward_model_kind(RewardModelKind("value", TOKEN_CLASSIFICATION, per_step=False, trained_on_labels=False))
