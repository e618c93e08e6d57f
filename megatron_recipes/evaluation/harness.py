"""The evaluation loop: prompts -> generations -> answers -> verdicts -> metrics and records.

    run_evaluation(problems, generator, style, params, checker, sandbox=None, k_values=(1,))
        -> EvaluationReport (metrics, breakdowns, per-problem records)
    write_report(report, output_dir) -> paths of results.json, records.jsonl, table.md

Accuracy is the mean correctness over all samples of gradable problems (with n=1 and greedy
sampling: the usual accuracy); pass@k and maj@k for each k <= n. Problems whose every reference
answer is unparseable are counted as ungradable and left out of every mean (never scored 0).
Breakdowns by subject and by level (MATH) use the same per-sample mean.

Cost: one generator call for the whole set; answer checks batched (most in-process, the rest in
the checker's worker pool); program-of-thought runs one sandboxed process per sample, in parallel
over the sandbox pool.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from megatron_recipes.evaluation.datasets import Problem
from megatron_recipes.evaluation.metrics import majority_index, mean, pass_at_k
from megatron_recipes.evaluation.prompts import PromptStyle
from megatron_recipes.generation.interface import Generator, SamplingParams
from megatron_recipes.rewards.equivalence import EQUAL, UNPARSEABLE_REFERENCE, AnswerChecker
from megatron_recipes.rewards.extraction import extract_answer
from megatron_recipes.sandbox.tool_use import extract_python_blocks


@dataclass
class EvaluationReport:
    summary: dict
    by_subject: dict
    by_level: dict
    records: list[dict] = field(default_factory=list)


def _answers(texts: list[str], style: PromptStyle, sandbox) -> tuple[list[str | None], list[dict | None]]:
    if not style.program_of_thought:
        return [extract_answer(t, style.extraction) for t in texts], [None] * len(texts)
    if sandbox is None:
        raise ValueError("program_of_thought needs a sandbox")

    codes = []
    for text in texts:
        blocks = extract_python_blocks(text)
        codes.append(blocks[-1] if blocks else "")
    runnable = [i for i, code in enumerate(codes) if code.strip()]
    results = sandbox.map([codes[i] for i in runnable]) if runnable else []
    answers: list[str | None] = [None] * len(texts)
    executions: list[dict | None] = [None] * len(texts)
    for index, result in zip(runnable, results):
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        answers[index] = lines[-1] if result.ok and lines else None
        executions[index] = {
            "exit_code": result.exit_code,
            "limit_hit": result.limit_hit,
            "stderr_tail": result.stderr[-300:],
        }
    return answers, executions


def run_evaluation(
    problems: Sequence[Problem],
    generator: Generator,
    style: PromptStyle,
    params: SamplingParams,
    checker: AnswerChecker,
    sandbox=None,
    k_values: Sequence[int] = (1,),
) -> EvaluationReport:
    if not problems:
        raise ValueError("no problems to evaluate")
    k_values = sorted({k for k in k_values if 1 <= k <= params.n} | {1})
    params = replace(params, stop=tuple(dict.fromkeys([*params.stop, *style.stop])))
    prompts = [style.build(p.question) for p in problems]
    generations = generator.generate(prompts, params, request_ids=[p.id for p in problems])
    if len(generations) != len(problems):
        raise ValueError(f"the generator returned {len(generations)} results for {len(problems)} prompts")
    texts = [g.text for samples in generations for g in samples]
    answers, executions = _answers(texts, style, sandbox)

    # One batched check over every (sample answer, acceptable reference) pair.
    pairs: list[tuple[int, int, int]] = []  # (problem, sample, reference)
    predictions, references = [], []
    position = 0
    sample_offsets = []
    for problem_index, (problem, samples) in enumerate(zip(problems, generations)):
        sample_offsets.append(position)
        for sample_index in range(len(samples)):
            for reference_index, reference in enumerate(problem.answers):
                pairs.append((problem_index, sample_index, reference_index))
                predictions.append(answers[position + sample_index])
                references.append(reference)
        position += len(samples)
    verdicts = checker.check_batch(predictions, references)
    correct = defaultdict(bool)
    gradable = defaultdict(bool)
    for (problem_index, sample_index, _), verdict in zip(pairs, verdicts):
        if verdict != UNPARSEABLE_REFERENCE:
            gradable[problem_index] = True
        if verdict == EQUAL:
            correct[(problem_index, sample_index)] = True

    records = []
    sample_scores, by_subject, by_level = [], defaultdict(list), defaultdict(list)
    pass_scores, majority_scores = defaultdict(list), defaultdict(list)
    no_answer = 0
    for problem_index, (problem, samples) in enumerate(zip(problems, generations)):
        offset = sample_offsets[problem_index]
        sample_answers = answers[offset : offset + len(samples)]
        flags = [correct[(problem_index, i)] for i in range(len(samples))]
        no_answer += sum(a is None for a in sample_answers)
        record = {
            "id": problem.id,
            "subject": problem.subject,
            "level": problem.level,
            "references": problem.answers,
            "gradable": gradable[problem_index],
            "prompt": prompts[problem_index],
            "samples": [
                {
                    "text": g.text,
                    "answer": a,
                    "correct": f,
                    "finish_reason": g.finish_reason,
                    **({"execution": executions[offset + i]} if executions[offset + i] else {}),
                }
                for i, (g, a, f) in enumerate(zip(samples, sample_answers, flags))
            ],
        }
        if gradable[problem_index]:
            sample_scores.extend(float(f) for f in flags)
            by_subject[problem.subject or "all"].extend(float(f) for f in flags)
            if problem.level:
                by_level[problem.level].extend(float(f) for f in flags)
            for k in k_values:
                pass_scores[k].append(pass_at_k(len(flags), sum(flags), k))
                majority = majority_index(sample_answers[:k])
                majority_scores[k].append(float(majority is not None and flags[majority]))
            record["pass_at_k"] = {str(k): pass_scores[k][-1] for k in k_values}
            record["majority_correct"] = {str(k): bool(majority_scores[k][-1]) for k in k_values}
        records.append(record)

    summary = {
        "problems": len(problems),
        "gradable": sum(gradable.values()),
        "ungradable": len(problems) - sum(gradable.values()),
        "samples_per_problem": params.n,
        "samples_without_answer": no_answer,
        "accuracy": mean(sample_scores),
        **{f"pass@{k}": mean(pass_scores[k]) for k in k_values},
        **{f"maj@{k}": mean(majority_scores[k]) for k in k_values},
    }
    return EvaluationReport(
        summary=summary,
        by_subject={s: {"samples": len(v), "accuracy": mean(v)} for s, v in sorted(by_subject.items())},
        by_level={level: {"samples": len(v), "accuracy": mean(v)} for level, v in sorted(by_level.items())},
        records=records,
    )


def format_table(report: EvaluationReport, title: str = "") -> str:
    lines = [f"## {title}" if title else "## Evaluation", "", "| metric | value |", "| --- | --- |"]
    for key, value in report.summary.items():
        lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    for heading, table in (("subject", report.by_subject), ("level", report.by_level)):
        if table:
            lines += ["", f"| {heading} | samples | accuracy |", "| --- | --- | --- |"]
            lines += [f"| {name} | {row['samples']} | {row['accuracy']:.4f} |" for name, row in table.items()]
    return "\n".join(lines) + "\n"


def write_report(
    report: EvaluationReport, output_dir: str | Path, config: dict | None = None, title: str = ""
) -> dict[str, Path]:
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"results": output / "results.json", "records": output / "records.jsonl", "table": output / "table.md"}
    with paths["records"].open("w", encoding="utf-8") as handle:
        for record in report.records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    paths["table"].write_text(format_table(report, title), encoding="utf-8")
    results = {
        "summary": report.summary,
        "by_subject": report.by_subject,
        "by_level": report.by_level,
        "config": config or {},
    }
    paths["results"].write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return paths
