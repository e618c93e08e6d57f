"""Helpers of the evaluation tests: the benchmark fixtures we wrote (tests/assets/evaluation/, one
directory per public layout, laid out as `suite.benchmarks_dir` expects) and generations that
answer them rightly or wrongly, in the form each prompt style reads."""

from __future__ import annotations

import json
from pathlib import Path

from megatron_recipes.evaluation.problems import CHOICE_LETTERS, KIND_CHOICE, KIND_CODE, Problem
from megatron_recipes.evaluation.prompts import MODE_PROGRAM, PromptStyle
from tests.support import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "assets" / "evaluation"
# Right and wrong programs for the code fixtures: benchmark directory -> problem id -> program.
PROGRAMS = json.loads((FIXTURES / "programs.json").read_text())


def wrong_letter(problem: Problem) -> str:
    return CHOICE_LETTERS[(CHOICE_LETTERS.index(problem.answer) + 1) % len(problem.choices)]


def sample_text(problem: Problem, style: PromptStyle, right: bool, programs: str = "") -> str:
    """A generation a model could write for `problem` in `style`, right or wrong.
    `programs`: the PROGRAMS key of a code fixture (default: the problem's benchmark)."""
    if problem.kind == KIND_CODE:
        program = PROGRAMS[programs or problem.source][problem.id]["right" if right else "wrong"]
        return f"<think>Read the input, compute, print.</think>\nHere is the program.\n```python\n{program}```\n"
    if problem.kind == KIND_CHOICE:
        letter = problem.answer if right else wrong_letter(problem)
        if style.name.startswith("zh"):
            return f"逐项检验。所以答案是{letter}。"
        return f"Checking each option in turn. The answer is ({letter})."
    answers = problem.blanks or [problem.answer]
    if not right:
        answers = [f"-98765{index}" for index in range(len(answers))]
    if style.mode == MODE_PROGRAM:
        return "```python\nprint(%r)\n```" % "; ".join(answers)
    if style.name == "gsm8k_cot_8shot":
        return f"Working it out step by step. The answer is {answers[0]}."
    if style.name.startswith("zh") and len(answers) == 1:
        return f"逐步计算。所以答案是{answers[0]}。"
    boxes = " and ".join(f"$\\boxed{{{answer}}}$" for answer in answers)
    return f"<think>Let me work it out.</think> The final answer is {boxes}."


def write_generations(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"id": i, "generations": texts}, ensure_ascii=False) + "\n" for i, texts in rows)
    )
    return path
