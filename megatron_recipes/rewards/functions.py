"""Reward functions, registered by name (the GRPO config picks them: `rewards: [math_accuracy]`).

Every reward function has the same signature and is pure (no state but caches):

    reward(completions: Sequence[str], references: Sequence[str | None], **options)
        -> list[float | None]

`completions[i]` is the generated text of sample i (the response only, no prompt); `references[i]`
is the reference *final answer* of its problem (LaTeX or plain; a full MATH solution with a
`\\boxed{}` or a GSM8K solution with `#### N` is accepted and its answer taken). The result has one
entry per completion: 1.0 or 0.0, or None when the reference itself cannot be parsed (the trainer
must drop such samples, not treat them as wrong). Format rewards ignore references (pass Nones).

Registered: math_accuracy (boxed / "answer is"; no last-number fallback), gsm8k_accuracy
(#### / boxed / "answer is" / last number), multiple_choice_accuracy (letters), think_format
(R1-Zero `<think>...</think> answer`), think_answer_format (`<think>...</think><answer>...</answer>`).
`register_reward(name)` adds more; `get_reward(name)` looks one up with a one-line error.

Cost: extraction is linear in completion length; equivalence as in `equivalence.py` (most pairs
decided in-process, the rest in the worker pool, in parallel across a batch).
"""

from __future__ import annotations

from typing import Callable, Sequence

from megatron_recipes.rewards.equivalence import EQUAL, UNPARSEABLE_REFERENCE, AnswerChecker
from megatron_recipes.rewards.extraction import (
    STYLE_STRATEGIES,
    extract_answer,
    extract_boxed,
    extract_choice,
    extract_gsm8k,
    follows_think_format,
)

RewardFunction = Callable[..., list]
REWARD_FUNCTIONS: dict[str, RewardFunction] = {}


def register_reward(name: str) -> Callable[[RewardFunction], RewardFunction]:
    def decorator(function: RewardFunction) -> RewardFunction:
        if name in REWARD_FUNCTIONS and REWARD_FUNCTIONS[name] is not function:
            raise ValueError(f"reward {name!r} is already registered")
        REWARD_FUNCTIONS[name] = function
        return function

    return decorator


def get_reward(name: str) -> RewardFunction:
    try:
        return REWARD_FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; registered: {', '.join(sorted(REWARD_FUNCTIONS))}") from None


def reference_answer(reference: str | None) -> str | None:
    """The final answer inside a reference: a `\\boxed{}` of a solution, a GSM8K `#### N`, or the
    reference itself when it is already a final answer."""
    if reference is None:
        return None
    text = str(reference).strip()
    if not text:
        return None
    if "\\boxed" in text or "\\fbox" in text:
        return extract_boxed(text, "last")
    if "####" in text:
        return extract_gsm8k(text)
    return text


_CHECKERS: dict[int, AnswerChecker] = {}


def _default_checker() -> AnswerChecker:
    checker = _CHECKERS.get(0)
    if checker is None:
        checker = _CHECKERS[0] = AnswerChecker()
    return checker


def _accuracy(completions, references, strategies, boxed, last_number_fallback, checker) -> list[float | None]:
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    checker = checker or _default_checker()
    predictions = [extract_answer(c or "", strategies, boxed, last_number_fallback) for c in completions]
    answers = [reference_answer(r) for r in references]
    verdicts = checker.check_batch(predictions, answers)
    return [None if v == UNPARSEABLE_REFERENCE else (1.0 if v == EQUAL else 0.0) for v in verdicts]


@register_reward("math_accuracy")
def math_accuracy_reward(
    completions: Sequence[str],
    references: Sequence[str | None],
    *,
    boxed: str = "last",
    last_number_fallback: bool = False,
    checker: AnswerChecker | None = None,
) -> list[float | None]:
    """1.0 when the boxed (or "the answer is") answer equals the reference, 0.0 otherwise, None
    for an unparseable reference. MATH-style: no last-number fallback by default."""
    return _accuracy(completions, references, STYLE_STRATEGIES["math"], boxed, last_number_fallback, checker)


@register_reward("gsm8k_accuracy")
def gsm8k_accuracy_reward(
    completions: Sequence[str],
    references: Sequence[str | None],
    *,
    last_number_fallback: bool = True,
    checker: AnswerChecker | None = None,
) -> list[float | None]:
    """GSM8K-style: `#### N`, then boxed, then "the answer is", then (by default) the last number."""
    strategies = tuple(s for s in STYLE_STRATEGIES["gsm8k"] if s != "last_number")
    return _accuracy(completions, references, strategies, "last", last_number_fallback, checker)


@register_reward("multiple_choice_accuracy")
def multiple_choice_accuracy_reward(
    completions: Sequence[str], references: Sequence[str | None], **_: object
) -> list[float | None]:
    """1.0 when the chosen letter (A-J) equals the reference letter; None if the reference is not a letter."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    rewards: list[float | None] = []
    for completion, reference in zip(completions, references):
        letter = (
            extract_choice(str(reference or ""))
            if reference and len(str(reference).strip()) > 1
            else (str(reference or "").strip().upper() or None)
        )
        if not letter or len(letter) != 1 or not letter.isalpha():
            rewards.append(None)
            continue
        rewards.append(1.0 if extract_answer(completion or "", ("choice",)) == letter else 0.0)
    return rewards


@register_reward("think_format")
def think_format_reward(
    completions: Sequence[str], references: Sequence[str | None] | None = None, **_: object
) -> list[float | None]:
    """R1-Zero format: 1.0 for `<think>reasoning</think>` followed by a non-empty answer, else 0.0."""
    return [1.0 if follows_think_format(c) else 0.0 for c in completions]


@register_reward("think_answer_format")
def think_answer_format_reward(
    completions: Sequence[str], references: Sequence[str | None] | None = None, **_: object
) -> list[float | None]:
    """Strict R1 format: `<think>...</think>` then `<answer>...</answer>` and nothing else."""
    return [1.0 if follows_think_format(c, require_answer_tags=True) else 0.0 for c in completions]
