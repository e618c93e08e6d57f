"""Scoring samples: from generated text to (answer, correct, timed out) per sample, by problem kind.

  answer   the final answer is extracted by the prompt style's strategies (program-of-thought:
           the program's last printed line) and compared with every acceptable reference by the
           answer checker (rewards.AnswerChecker, batched); fill-in problems with several blanks
           need every blank right
  choice   the letter the sample chose (choice.extract_choice_letter) against the correct letter
  code     the last code block, judged on every test in the sandbox (code_problems.judge_programs)

    score_samples(problems, texts, style, tools) -> list (per problem) of list (per sample) of SampleScore

A problem whose every reference the checker cannot read is ungradable (left out of every mean,
never scored 0).

Cost: answer checks are batched (most in-process, the rest in the checker's worker pool); each
program-of-thought or code sample is one sandboxed process, run `max_workers` at a time.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from megatron_recipes.evaluation.choice import extract_choice_letter
from megatron_recipes.evaluation.code_problems import extract_program, judge_programs
from megatron_recipes.evaluation.config import HarnessConfig
from megatron_recipes.evaluation.problems import KIND_CHOICE, KIND_CODE, Problem
from megatron_recipes.evaluation.prompts import MODE_PROGRAM, PromptStyle
from megatron_recipes.rewards.equivalence import EQUAL, UNPARSEABLE_REFERENCE, AnswerChecker
from megatron_recipes.rewards.extraction import answer_region, extract_answer, find_boxed
from megatron_recipes.sandbox.executor import LIMIT_CPU_TIME, LIMIT_WALL_TIME, SandboxPool
from megatron_recipes.sandbox.tool_use import program_answer

TIMEOUT_LIMITS = (LIMIT_WALL_TIME, LIMIT_CPU_TIME)
# "答案是 12" / "答案为：$\frac{1}{2}$" (Chinese few-shot answers say it this way).
_CHINESE_ANSWER = re.compile(r"答案\s*(?:是|为)\s*[:：]?\s*\$?([^\n。$]+?)\$?\s*(?:。|$)", re.MULTILINE)
_BLANK_SEPARATOR = re.compile(r"\s*[;；]\s*")


@dataclass
class ScoringTools:
    """What scoring needs: the answer checker, and sandboxes for programs (PoT) and code tests."""

    checker: AnswerChecker
    sandbox: SandboxPool | None = None
    code_sandbox: SandboxPool | None = None
    code_time_limit_s: float = HarnessConfig.code_time_limit_s


@dataclass
class SampleScore:
    answer: str | None
    correct: bool
    timed_out: bool = False
    details: dict = field(default_factory=dict)


@dataclass
class ProblemScore:
    gradable: bool
    samples: list[SampleScore]


def extract_final_answer(text: str, style: PromptStyle, language: str = "en") -> str | None:
    answer = extract_answer(text, style.extraction) if style.extraction else None
    if answer is None and language == "zh":
        matches = _CHINESE_ANSWER.findall(answer_region(text or ""))
        answer = matches[-1].strip() if matches else None
    return answer


def blank_answers(text: str, answer: str | None, blanks: int) -> list[str] | None:
    """A fill-in sample's answers, one per blank: its last `blanks` boxes, or its one answer split
    at ';'."""
    boxes = find_boxed(answer_region(text or ""))
    if len(boxes) >= blanks:
        return boxes[-blanks:]
    if answer:
        parts = [part for part in _BLANK_SEPARATOR.split(answer.strip()) if part]
        if len(parts) == blanks:
            return parts
    return None


def _program_answers(texts: list[str], sandbox: SandboxPool | None) -> list[tuple[str | None, dict, bool]]:
    if sandbox is None:
        raise ValueError("program-of-thought scoring needs a sandbox")
    # program_answer runs one program; the pool's slots bound how many run at once.
    with ThreadPoolExecutor(max_workers=sandbox.max_workers) as threads:
        results = list(threads.map(lambda text: program_answer(text, sandbox), texts))
    out = []
    for answer, execution in results:
        if execution is None:
            out.append((None, {"execution": None}, False))
            continue
        details = {
            "execution": {
                "exit_code": execution.exit_code,
                "limit_hit": execution.limit_hit,
                "stderr_tail": execution.stderr[-300:],
            }
        }
        out.append((answer, details, execution.limit_hit in TIMEOUT_LIMITS))
    return out


def _score_answers(
    problems: Sequence[Problem], texts: Sequence[Sequence[str]], style: PromptStyle, tools: ScoringTools
) -> list[ProblemScore]:
    flat = [(p, i, text) for p, samples in enumerate(texts) for i, text in enumerate(samples)]
    if style.mode == MODE_PROGRAM:
        extracted = _program_answers([text for _, _, text in flat], tools.sandbox)
    else:
        extracted = [(extract_final_answer(text, style, problems[p].language), {}, False) for p, _, text in flat]
    # One batched check: (sample, reference or blank) pairs.
    predictions, references, owners = [], [], []
    for (p, i, text), (answer, _, _) in zip(flat, extracted):
        problem = problems[p]
        if problem.blanks:
            parts = blank_answers(text, answer, len(problem.blanks)) or [None] * len(problem.blanks)
            for part, blank in zip(parts, problem.blanks):
                predictions.append(part)
                references.append(blank)
                owners.append((p, i, "blank"))
        else:
            for reference in problem.answers:
                predictions.append(answer)
                references.append(reference)
                owners.append((p, i, "reference"))
    verdicts = tools.checker.check_batch(predictions, references) if predictions else []
    gradable = [False] * len(problems)
    any_equal: dict[tuple[int, int], bool] = {}
    all_equal: dict[tuple[int, int], bool] = {}
    for (p, i, what), verdict in zip(owners, verdicts):
        if verdict != UNPARSEABLE_REFERENCE:
            gradable[p] = True
        key = (p, i)
        any_equal[key] = any_equal.get(key, False) or verdict == EQUAL
        all_equal[key] = all_equal.get(key, True) and verdict == EQUAL
    scores = [ProblemScore(gradable[p], []) for p in range(len(problems))]
    for (p, i, _), (answer, details, timed_out) in zip(flat, extracted):
        correct = all_equal.get((p, i), False) if problems[p].blanks else any_equal.get((p, i), False)
        scores[p].samples.append(SampleScore(answer, correct, timed_out, details))
    return scores


def _score_choices(problems: Sequence[Problem], texts: Sequence[Sequence[str]]) -> list[ProblemScore]:
    scores = []
    for problem, samples in zip(problems, texts):
        letters = [extract_choice_letter(text, len(problem.choices)) for text in samples]
        scores.append(
            ProblemScore(
                True, [SampleScore(letter, letter is not None and letter == problem.answer) for letter in letters]
            )
        )
    return scores


def _score_code(problems: Sequence[Problem], texts: Sequence[Sequence[str]], tools: ScoringTools) -> list[ProblemScore]:
    if tools.code_sandbox is None:
        raise ValueError("code problems need a sandbox")
    flat = [(p, text) for p, samples in enumerate(texts) for text in samples]
    programs = [extract_program(text) for _, text in flat]
    reports = judge_programs([problems[p] for p, _ in flat], programs, tools.code_sandbox, tools.code_time_limit_s)
    scores = [ProblemScore(True, []) for _ in problems]
    for (p, _), program, report in zip(flat, programs, reports):
        if report is None:
            scores[p].samples.append(SampleScore(None, False))
            continue
        scores[p].samples.append(
            SampleScore(
                f"{report.tests_passed}/{report.tests_total} tests",
                report.passed,
                report.timed_out,
                {"judge": report.as_record()},
            )
        )
    return scores


def score_samples(
    problems: Sequence[Problem], texts: Sequence[Sequence[str]], style: PromptStyle, tools: ScoringTools
) -> list[ProblemScore]:
    """Scores of every sample of every problem (problems of one benchmark, one kind)."""
    kinds = {problem.kind for problem in problems}
    if len(kinds) > 1:
        raise ValueError(f"one benchmark mixes problem kinds: {sorted(kinds)}")
    kind = kinds.pop() if kinds else None
    if kind == KIND_CHOICE:
        return _score_choices(problems, texts)
    if kind == KIND_CODE:
        return _score_code(problems, texts, tools)
    return _score_answers(problems, texts, style, tools)
