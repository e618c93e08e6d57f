"""Labels for reward-model data: sampled solutions, their rule-based outcome, and Math-Shepherd's
automatic step labels from completions (Wang et al. 2023, arXiv:2312.08935).

    solutions = sample_solutions(generator, records, samples_per_question, params, tokenizer)
    outcomes = outcome_labels(solutions, reward_function)                 # 1.0 / 0.0 / None
    hard, soft = math_shepherd_labels(completer, solutions, outcomes, completions, params, separator, reward_function)

A solution's steps are the non-empty pieces of its response split at the step separator
(reward_models/data.split_steps). For step k that is not the last one, the completer continues
the prefix "prompt + response up to the end of step k + separator" `completions` times (one
batched call of the shared KV-cache generator for every prefix of every solution); each
continuation, appended to the prefix, is graded by the answer checker against the reference.
The step's hard label is 1.0 when any continuation reaches the reference answer, its soft label
the fraction that do. The last step is the solution itself: both labels are its outcome. A
solution whose reference cannot be parsed has no labels (None).

Cost: generation of solutions x (steps - 1) x completions continuations (batched, KV cache);
checking is linear in their number.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.rl.step_rewards import split_steps


@dataclass
class Solution:
    question_id: str
    question: str
    prompt: str
    reference: str
    response: str
    finish_reason: str
    sample: int  # its index among the question's samples


def sample_solutions(generator, records: Sequence, samples: int, params: SamplingParams, tokenizer) -> list[Solution]:
    """`samples` solutions for each PromptRecord (id, question, answer, prompt) from the policy."""
    prompt_ids = [tokenizer.encode(record.prompt) for record in records]
    rows = [ids for ids in prompt_ids for _ in range(samples)]
    sampled = generator.generate_ids(rows, replace(params, n=1))
    solutions = []
    for index, output in enumerate(sampled):
        record = records[index // samples]
        solutions.append(
            Solution(
                record.id,
                record.question,
                record.prompt,
                record.answer,
                output.text,
                output.finish_reason,
                index % samples,
            )
        )
    return solutions


def outcome_labels(solutions: Sequence[Solution], reward_function: Callable) -> list[float | None]:
    return reward_function([s.response for s in solutions], [s.reference for s in solutions])


def step_prefixes(response: str, separator: str) -> list[str]:
    """The response up to the end of each step but the last, each followed by the separator."""
    steps = split_steps(response, separator)
    return [response[: step.end] + separator for step in steps[:-1]]


def math_shepherd_labels(
    completer,
    solutions: Sequence[Solution],
    outcomes: Sequence[float | None],
    completions: int,
    params: SamplingParams,
    separator: str,
    reward_function: Callable,
    tokenizer,
) -> tuple[list[list[float] | None], list[list[float] | None], int]:
    """(hard labels, soft labels) per solution (None when ungradable), and the number of
    continuations sampled. See the module docstring."""
    requests: list[tuple[int, int]] = []  # (solution, step)
    rows: list[list[int]] = []
    texts: list[str] = []
    for index, (solution, outcome) in enumerate(zip(solutions, outcomes)):
        if outcome is None:
            continue
        for step, prefix in enumerate(step_prefixes(solution.response, separator)):
            ids = tokenizer.encode(solution.prompt) + tokenizer.encode(prefix)
            for _ in range(completions):
                requests.append((index, step))
                rows.append(ids)
                texts.append(prefix)
    continued = completer.generate_ids(rows, replace(params, n=1)) if rows else []
    grades = reward_function(
        [prefix + output.text for prefix, output in zip(texts, continued)],
        [solutions[index].reference for index, _ in requests],
    )
    reached: dict[tuple[int, int], list[float]] = {}
    for key, grade in zip(requests, grades):
        reached.setdefault(key, []).append(grade or 0.0)
    hard: list[list[float] | None] = []
    soft: list[list[float] | None] = []
    for index, (solution, outcome) in enumerate(zip(solutions, outcomes)):
        if outcome is None:
            hard.append(None)
            soft.append(None)
            continue
        steps = len(split_steps(solution.response, separator))
        if steps == 0:
            hard.append([])
            soft.append([])
            continue
        fractions = [sum(reached[(index, step)]) / completions for step in range(steps - 1)] + [float(outcome)]
        hard.append([1.0 if fraction > 0 else 0.0 for fraction in fractions])
        soft.append(fractions)
    return hard, soft, len(rows)
