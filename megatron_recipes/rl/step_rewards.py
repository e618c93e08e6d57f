"""Process supervision: the step-reward function interface and a verifiable step reward.

A step-reward function scores each reasoning step of one response:

    step_reward(response: str, reference: str | None) -> list[Step(end, reward)]

`end` is the character offset in `response` where the step ends (exclusive); steps are in order.
The rollout driver maps each end to the token that completes it (`step_end_tokens`) and the
`process` advantage estimator (rl/objectives.py) normalises the rewards over the group and gives every
token the sum of the normalised rewards of the steps ending at or after it. A reward model
(a PRM) plugs in by registering a function with this signature.

Registered (STEP_REWARDS, `rl.step_reward`):
  arithmetic_steps  a step is a line holding an equation `expression = number`; it earns 1.0 when
                    every such equation on the line is true (integer/decimal arithmetic with
                    + - * / ^ and parentheses, evaluated exactly with fractions), else 0.0. The
                    response's end is a final step whose reward is the outcome (answer equals the
                    reference, via megatron_recipes.rewards), so a correct chain with a wrong
                    answer is still penalised where it matters.

  language_spans    R1's language-consistency reward given where the language is chosen: each
                    span of the chain of thought in one script (rewards/language.py: a sentence,
                    or consecutive sentences of one script) is a step that ends on the span's
                    first character, so the step's token is the one that opens the span (in the
                    R1 task's tokenizer a Chinese sentence is often one token; an English one
                    opens with its first word); rewarded `weight`
                    (rl.reward_options.language_spans.weight, default 1.0) when the span is in
                    the question's language, else 0.0. No outcome step: the outcome rewards stay
                    with the `outcome_steps` estimator's outcome part. Takes the question
                    (inputs "question").

A step reward registered with inputs=("question",) also receives `question=` (the sample's
question text); options from rl.reward_options.<its name> arrive as keywords.

Cost: linear in response length per response (equations are parsed with `ast`, never `eval`);
mapping step ends to tokens decodes O(log T) prefixes per step.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

from megatron_recipes.rewards import get_reward
from megatron_recipes.rewards.language import DEFAULT_LANGUAGES, chain_spans, question_language

STEP_REWARDS: dict[str, Callable[..., list["Step"]]] = {}
# name -> the extra per-sample inputs it takes ("question").
STEP_REWARD_INPUTS: dict[str, tuple[str, ...]] = {}


@dataclass(frozen=True)
class Step:
    end: int
    reward: float


def register_step_reward(name: str, inputs: Sequence[str] = ()):
    def decorator(function):
        STEP_REWARDS[name] = function
        STEP_REWARD_INPUTS[name] = tuple(inputs)
        return function

    return decorator


def step_reward_inputs(name: str) -> tuple[str, ...]:
    return STEP_REWARD_INPUTS.get(name, ())


def get_step_reward(name: str):
    try:
        return STEP_REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown step reward {name!r}; registered: {', '.join(sorted(STEP_REWARDS))}") from None


_EQUATION = re.compile(r"([-+*/^().\d\s]*\d[-+*/^().\d\s]*)=\s*(-?\d+(?:\.\d+)?)")
_MAX_EXPONENT = 64


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise ZeroDivisionError
            return left / right
        if isinstance(node.op, ast.Pow) and right.denominator == 1 and abs(right) <= _MAX_EXPONENT:
            return left ** int(right)
    raise ValueError("unsupported expression")


def equation_holds(expression: str, value: str) -> bool | None:
    """True/False for `expression = value`, None when the expression is not plain arithmetic."""
    try:
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
        return _evaluate(tree) == Fraction(value)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None


@register_step_reward("arithmetic_steps")
def arithmetic_steps(response: str, reference: str | None = None, outcome: float | None = None) -> list[Step]:
    """Steps = lines with equations (reward 1.0 if all hold) + a final outcome step (see module docstring).
    `outcome` may be passed by the driver (already checked); otherwise it is computed here."""
    steps: list[Step] = []
    offset = 0
    for line in response.splitlines(keepends=True):
        verdicts = [equation_holds(expression, value) for expression, value in _EQUATION.findall(line)]
        verdicts = [v for v in verdicts if v is not None]
        end = offset + len(line.rstrip("\n"))
        if verdicts:
            steps.append(Step(end, 1.0 if all(verdicts) else 0.0))
        offset += len(line)
    if outcome is None:
        outcome = (get_reward("math_accuracy")([response], [reference])[0] or 0.0) if reference is not None else 0.0
    final = len(response)
    if steps and steps[-1].end == final:
        steps[-1] = Step(final, (steps[-1].reward + outcome) / 2)
    else:
        steps.append(Step(final, float(outcome)))
    return steps


@register_step_reward("language_spans", inputs=("question",))
def language_span_steps(
    response: str,
    reference: str | None = None,
    outcome: float | None = None,
    *,
    question: str,
    weight: float = 1.0,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
) -> list[Step]:
    """One step per script span of the chain, on its opening character: `weight` when in the
    question's language, else 0 (see module docstring). A question without words has no target:
    every span earns 0."""
    target = question_language(question, languages)
    return [
        Step(start + 1, weight if language == target else 0.0)
        for start, _, _, language in chain_spans(response, languages)
    ]


def split_steps(response: str, separator: str = "\n") -> list[Step]:
    """One Step(end, 0.0) per non-empty piece of `response` split at `separator` (end: the offset
    after its last character). The step format of reward models (reward_models/data.py)."""
    steps, offset = [], 0
    for piece in response.split(separator):
        end = offset + len(piece)
        if piece.strip():
            steps.append(Step(end, 0.0))
        offset = end + len(separator)
    return steps


def step_end_tokens(
    steps: Sequence[Step], token_ids: Sequence[int], decode: Callable[[Sequence[int]], str]
) -> list[int]:
    """The index (in token_ids) of the token completing each step: the first k with
    len(decode(token_ids[:k + 1])) >= step.end (binary search on decoded prefixes)."""
    positions = []
    for step in steps:
        low, high = 0, len(token_ids) - 1
        while low < high:
            middle = (low + high) // 2
            if len(decode(token_ids[: middle + 1])) >= step.end:
                high = middle
            else:
                low = middle + 1
        positions.append(max(low, 0))
    return positions
