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
(R1-Zero `<think>...</think> answer`), think_answer_format (`<think>...</think><answer>...</answer>`),
think_accuracy (R1: the answer part after `</think>` only), language_consistency (R1: the share
of the chain of thought in the question's language, language.py), code_pass_rate / code_all_pass
(R1's coding reward: the program run against test cases in the sandbox, code_execution.py),
general_preference (the final R1 stage's score for general prompts: a reference-overlap stand-in
that a learned reward model replaces by being registered under its own name and named in
rl.rewards).
`register_reward(name, inputs=())` adds more; `get_reward(name)` looks one up with a one-line error.

Extra inputs: a reward registered with `inputs=("questions",)` also receives `questions=[...]`
(the question text of each completion's prompt, rollout.compute_rewards passes it); options from
the config (`rl.reward_options.<name>`) arrive as keyword arguments.

Scenarios: a reference that starts with GENERAL_REFERENCE_PREFIX ("[general]") marks a general
(non-reasoning) prompt whose reference response follows. Accuracy-style rewards score such
samples 0.0 and general_preference scores every other sample 0.0, so one weighted sum serves a
batch that mixes reasoning and general prompts (R1's final RL stage).

Cost: extraction is linear in completion length; equivalence as in `equivalence.py` (most pairs
decided in-process, the rest in the worker pool, in parallel across a batch).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from megatron_recipes.rewards.code_execution import code_rewards
from megatron_recipes.rewards.equivalence import EQUAL, UNPARSEABLE_REFERENCE, AnswerChecker
from megatron_recipes.rewards.extraction import (
    STYLE_STRATEGIES,
    answer_region,
    extract_answer,
    extract_boxed,
    extract_choice,
    extract_gsm8k,
    follows_think_format,
)
from megatron_recipes.rewards.language import DEFAULT_LANGUAGES, chain_of_thought, consistency_score, question_language

RewardFunction = Callable[..., list]
REWARD_FUNCTIONS: dict[str, RewardFunction] = {}
# name -> the extra per-sample inputs it takes ("questions").
REWARD_INPUTS: dict[str, tuple[str, ...]] = {}
GENERAL_REFERENCE_PREFIX = "[general]"


def register_reward(name: str, inputs: Sequence[str] = ()) -> Callable[[RewardFunction], RewardFunction]:
    def decorator(function: RewardFunction) -> RewardFunction:
        if name in REWARD_FUNCTIONS and REWARD_FUNCTIONS[name] is not function:
            raise ValueError(f"reward {name!r} is already registered")
        REWARD_FUNCTIONS[name] = function
        REWARD_INPUTS[name] = tuple(inputs)
        return function

    return decorator


def reward_inputs(name: str) -> tuple[str, ...]:
    """The extra per-sample inputs reward `name` takes (e.g. ("questions",))."""
    return REWARD_INPUTS.get(name, ())


def is_general_reference(reference: str | None) -> bool:
    return reference is not None and str(reference).lstrip().startswith(GENERAL_REFERENCE_PREFIX)


def general_reference_text(reference: str) -> str:
    return str(reference).lstrip()[len(GENERAL_REFERENCE_PREFIX) :].strip()


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


@register_reward("think_accuracy")
def think_accuracy_reward(
    completions: Sequence[str],
    references: Sequence[str | None],
    *,
    checker: AnswerChecker | None = None,
) -> list[float | None]:
    """R1's accuracy: the answer is read from the answer part only (after `</think>`, inside
    <answer> tags when present: a box, "the answer is", else its last number); a completion that
    never closed its reasoning has no answer (0.0). General-prompt samples score 0.0."""
    rewards: list[float | None] = [0.0] * len(completions)
    graded = [i for i, reference in enumerate(references) if not is_general_reference(reference)]
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    scored = _accuracy(
        [completions[i] for i in graded],
        [references[i] for i in graded],
        STYLE_STRATEGIES["think"],
        "last",
        False,
        checker,
    )
    for index, value in zip(graded, scored):
        rewards[index] = value
    return rewards


@register_reward("language_consistency", inputs=("questions",))
def language_consistency_reward(
    completions: Sequence[str],
    references: Sequence[str | None] | None = None,
    *,
    questions: Sequence[str] | None = None,
    target_language: str = "auto",
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    **_: object,
) -> list[float | None]:
    """R1's language-consistency reward: the share of the chain of thought's words (CJK:
    characters) in the target language (language.py). target_language "auto": the language of
    each sample's question (needs `questions`), else a fixed code such as "en"."""
    candidates = tuple(languages)
    if target_language == "auto" and questions is None:
        raise ValueError("language_consistency with target_language=auto needs the questions")
    rewards: list[float | None] = []
    for index, completion in enumerate(completions):
        target = question_language(questions[index], candidates) if target_language == "auto" else target_language
        rewards.append(
            0.0 if target is None else consistency_score(chain_of_thought(completion or ""), target, candidates)
        )
    return rewards


@register_reward("code_pass_rate")
def code_pass_rate_reward(
    completions: Sequence[str], references: Sequence[str | None], **_: object
) -> list[float | None]:
    """The share of the reference's test cases the completion's program passes (code_execution.py)."""
    return code_rewards(completions, references, all_pass=False)


@register_reward("code_all_pass")
def code_all_pass_reward(
    completions: Sequence[str], references: Sequence[str | None], **_: object
) -> list[float | None]:
    """1.0 when the completion's program passes every test case of the reference, else 0.0."""
    return code_rewards(completions, references, all_pass=True)


_WORD = re.compile(r"\w+")


def _overlap_f1(answer: str, reference: str) -> float:
    predicted, expected = _WORD.findall(answer.lower()), _WORD.findall(reference.lower())
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum(min(predicted.count(word), expected.count(word)) for word in set(expected))
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@register_reward("general_preference", inputs=("questions",))
def general_preference_reward(
    completions: Sequence[str],
    references: Sequence[str | None],
    *,
    questions: Sequence[str] | None = None,
    **_: object,
) -> list[float | None]:
    """The final R1 stage's reward for general prompts, rule-based until a learned reward model is
    registered and named instead: word-overlap F1 between the answer part (after `</think>`) and
    the reference response. Samples of reasoning prompts score 0.0."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    return [
        _overlap_f1(answer_region(completion or ""), general_reference_text(reference))
        if is_general_reference(reference)
        else 0.0
        for completion, reference in zip(completions, references)
    ]
