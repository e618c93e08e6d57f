"""The evaluation loop of one benchmark: prompts -> generations -> scores -> records -> metrics.

    run_benchmark(run, generator, tools, settings, output_dir, identity) -> EvaluationReport
    run_evaluation(problems, generator, style, params, checker, sandbox=None, k_values=(1,))
        the same in memory (no output directory), for tests and notebooks
    summarize(records, k_values, ...) -> EvaluationReport      metrics from per-problem records
    write_report(report, output_dir) -> paths of results.json, records.jsonl, table.md

Generation is batched by chunks of `settings.chunk_size` problems (one generator call each, all
samples of the chunk; tool-integrated chunks take one call per turn). A chunk is also the unit of
resumption: its records are appended to `<output_dir>/progress/rank<R>.jsonl` in one write and
fsynced once scored; a restarted run (same settings: `progress/state.json` holds their
fingerprint) reads every complete chunk back and generates only the others, so a killed
evaluation continues where it stopped and no problem is scored twice. Chunk c always holds the
same problems and samples with seed `sampling.seed + c`, so a resumed run's records equal an
uninterrupted run's. Under data parallelism (torchrun, generator=megatron) rank r of D takes the
unfinished chunks r, r + D, ...; the first rank of each tensor-parallel group writes.

A progress line (problems done, problems/s, ETA) is logged every `progress_interval_s`.

Metrics (metrics.py): accuracy = pass@1 = mean per-sample correctness (greedy accuracy with one
temperature-0 sample; R1's pass@1 with k samples at temperature T), pass@k (unbiased), cons@k
(majority vote; not for code), per subject / level / language; mean response length in
characters and tokens; samples without an answer, timed out (sandbox time limits), cut at
max_new_tokens, and prompts longer than the model's context (not generated) counted apart.
Ungradable problems (no readable reference) are left out of means.

Cost: generation dominates; scoring is batched (see scoring.py); the records of one benchmark
are held in memory once at the end (thousands of problems).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from megatron_recipes.evaluation.config import HarnessConfig
from megatron_recipes.evaluation.distributed import Layout, barrier, current_layout
from megatron_recipes.evaluation.metrics import answer_key, consensus_at_k, mean, pass_at_k_vector
from megatron_recipes.evaluation.problems import KIND_CHOICE, KIND_CODE, Problem
from megatron_recipes.evaluation.prompts import MODE_TOOL, FewShot, PromptStyle
from megatron_recipes.evaluation.scoring import TIMEOUT_LIMITS, ProblemScore, ScoringTools, score_samples
from megatron_recipes.evaluation.tool_integrated import generate_tool_integrated
from megatron_recipes.generation.interface import FINISH_LENGTH, Generator, PrecomputedGenerations, SamplingParams
from megatron_recipes.rewards.equivalence import AnswerChecker
from megatron_recipes.sandbox.executor import SandboxPool
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class BenchmarkRun:
    """One cell of an evaluation: a benchmark's problems asked in one style with one sampling."""

    name: str
    problems: list[Problem]
    style: PromptStyle
    params: SamplingParams
    k_values: Sequence[int] = (1,)
    exemplars: FewShot | None = None

    def prompts(self) -> list[str]:
        return [self.style.build(problem, self.exemplars) for problem in self.problems]


@dataclass
class EvaluationReport:
    summary: dict
    by_subject: dict
    by_level: dict
    records: list[dict] = field(default_factory=list)
    by_language: dict = field(default_factory=dict)


def file_identity(path: str | Path) -> dict:
    """A generations file as resumption sees it: a rewritten file is another run."""
    stat = Path(path).stat()
    return {"generations": str(path), "size": stat.st_size, "modified_ns": stat.st_mtime_ns}


def _sha(values: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class RecordStore:
    """Committed chunks of one benchmark run under `<output_dir>/progress/` (see module docstring)."""

    def __init__(self, output_dir: Path, fingerprint: dict, resume: bool, layout: Layout):
        self.directory = output_dir / "progress"
        self.layout = layout
        self.part = self.directory / f"rank{layout.rank}.jsonl"
        state_path = self.directory / STATE_FILE
        if layout.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            previous = json.loads(state_path.read_text()) if state_path.exists() else None
            if previous is not None and previous != fingerprint and resume:
                changed = sorted(k for k in {*previous, *fingerprint} if previous.get(k) != fingerprint.get(k))
                raise ConfigError(
                    f"{output_dir} holds an evaluation with other settings ({', '.join(changed)} differ): "
                    "use another output_dir, or harness.resume=false to start it again"
                )
            if not resume or previous != fingerprint:
                for stale in self.directory.glob("rank*.jsonl"):
                    stale.unlink()
            state_path.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        barrier(layout)

    def committed(self, chunk_sizes: Sequence[int]) -> dict[int, list[dict]]:
        """Records of every complete chunk, from every rank's file (a torn last line is ignored)."""
        by_chunk: dict[int, dict[str, dict]] = defaultdict(dict)
        for path in sorted(self.directory.glob("rank*.jsonl")):
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a write cut by a kill: that chunk is incomplete and is redone
                    chunk = record.get("chunk")
                    if isinstance(chunk, int) and 0 <= chunk < len(chunk_sizes):
                        by_chunk[chunk].setdefault(record["id"], record)
        return {c: list(records.values()) for c, records in by_chunk.items() if len(records) == chunk_sizes[c]}

    def commit(self, records: list[dict]) -> None:
        payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with self.part.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


class Progress:
    def __init__(self, label: str, total: int, already: int, interval_s: float):
        self.label, self.total, self.done, self.interval_s = label, total, already, interval_s
        self.started = self.last_log = time.monotonic()
        self.new = 0

    def advance(self, count: int, force: bool = False) -> None:
        self.done += count
        self.new += count
        now = time.monotonic()
        if not force and now - self.last_log < self.interval_s:
            return
        self.last_log = now
        rate = self.new / max(now - self.started, 1e-9)
        remaining = self.total - self.done
        eta = remaining / rate if rate > 0 else float("inf")
        log.info(
            "%s: %d/%d problems (%.1f%%), %.2f problems/s, ETA %s",
            self.label,
            self.done,
            self.total,
            100.0 * self.done / max(self.total, 1),
            rate,
            _duration(eta),
        )

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        log.info(
            "%s: %d problems done (%d this run in %s, %.2f problems/s)",
            self.label,
            self.total,
            self.new,
            _duration(elapsed),
            self.new / max(elapsed, 1e-9),
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _generate_chunk(
    run: BenchmarkRun,
    generator: Generator,
    prompts: list[str],
    problems: list[Problem],
    params: SamplingParams,
    tools: ScoringTools,
    settings: HarnessConfig,
    layout: Layout,
) -> list[list[dict]]:
    """Per problem, per sample: {"text", "finish_reason", "tokens", (tool details)}."""
    ids = [problem.id for problem in problems]
    if run.style.mode == MODE_TOOL and not isinstance(generator, PrecomputedGenerations):
        trajectories = generate_tool_integrated(
            generator,
            prompts,
            params,
            tools.sandbox,
            settings.tool_max_steps,
            settings.tool_max_output_characters,
            request_ids=ids,
            layout=layout,
        )
        return [
            [
                {
                    "text": t.text,
                    "finish_reason": t.finish_reason,
                    "tokens": t.tokens,
                    "tool_steps": t.steps,
                    "tool_executions": t.executions,
                    "stopped_by_step_limit": t.stopped_by_step_limit,
                }
                for t in samples
            ]
            for samples in trajectories
        ]
    fits = prompts_that_fit(generator, prompts)
    kept = [index for index, fit in enumerate(fits) if fit]
    generations = (
        generator.generate([prompts[i] for i in kept], params, request_ids=[ids[i] for i in kept]) if kept else []
    )
    if len(generations) != len(kept):
        raise ValueError(f"the generator returned {len(generations)} results for {len(kept)} prompts")
    rows: list[list[dict]] = [[TOO_LONG_SAMPLE.copy() for _ in range(params.n)] for _ in prompts]
    for index, samples in zip(kept, generations):
        rows[index] = [
            {"text": g.text, "finish_reason": g.finish_reason, "tokens": len(g.token_ids) or None} for g in samples
        ]
    return rows


FINISH_PROMPT_TOO_LONG = "prompt_too_long"
TOO_LONG_SAMPLE = {"text": "", "finish_reason": FINISH_PROMPT_TOO_LONG, "tokens": 0}


def prompts_that_fit(generator: Generator, prompts: Sequence[str]) -> list[bool]:
    """False for a prompt that leaves no room to generate in the model's context (generators that
    know theirs: a `context_length` and a `tokenizer`); such a sample is empty and scored wrong,
    counted apart, and the rest of the chunk is generated."""
    context = getattr(generator, "context_length", None)
    tokenizer = getattr(generator, "tokenizer", None)
    if not context or tokenizer is None:
        return [True] * len(prompts)
    return [len(tokenizer.encode(prompt)) < context for prompt in prompts]


def _chunk_records(
    run: BenchmarkRun,
    chunk: int,
    problems: list[Problem],
    prompts: list[str],
    samples: list[list[dict]],
    scores: list[ProblemScore],
) -> list[dict]:
    records = []
    for problem, prompt, generated, score in zip(problems, prompts, samples, scores):
        sample_records = []
        for sample, sample_score in zip(generated, score.samples):
            timed_out = sample_score.timed_out or any(
                execution.get("limit_hit") in TIMEOUT_LIMITS for execution in sample.get("tool_executions", [])
            )
            sample_records.append(
                {
                    **sample,
                    "answer": sample_score.answer,
                    "correct": sample_score.correct,
                    "timed_out": timed_out,
                    **sample_score.details,
                }
            )
        records.append(
            {
                "id": problem.id,
                "chunk": chunk,
                "benchmark": run.name,
                "subject": problem.subject,
                "level": problem.level,
                "language": problem.language,
                "references": problem.blanks or problem.answers,
                "gradable": score.gradable,
                "prompt": prompt,
                "samples": sample_records,
            }
        )
    return records


def run_benchmark(
    run: BenchmarkRun,
    generator: Generator,
    tools: ScoringTools,
    settings: HarnessConfig | None = None,
    output_dir: str | Path | None = None,
    identity: dict | None = None,
) -> EvaluationReport | None:
    """Evaluate `run` (resumably when output_dir is given). Returns the report on the rank that
    writes (every rank without distributed generation), None on the others."""
    if not run.problems:
        raise ValueError(f"{run.name}: no problems to evaluate")
    settings = settings or HarnessConfig()
    layout = current_layout()
    params = replace(run.params, stop=list(dict.fromkeys([*run.params.stop, *run.style.stop])))
    prompts = run.prompts()
    starts = list(range(0, len(run.problems), settings.chunk_size))
    sizes = [len(run.problems[start : start + settings.chunk_size]) for start in starts]
    store = None
    committed: dict[int, list[dict]] = {}
    if output_dir is not None:
        fingerprint = {
            "benchmark": run.name,
            "problems": _sha([p.id for p in run.problems]),
            "prompts": _sha(prompts),
            "sampling": asdict(params),
            "chunk_size": settings.chunk_size,
            "tool_max_steps": settings.tool_max_steps,
            **(identity or {}),
        }
        store = RecordStore(Path(output_dir), json.loads(json.dumps(fingerprint)), settings.resume, layout)
        committed = store.committed(sizes)
        # Every rank must read the same committed set before any rank commits a new chunk: a rank
        # that read after another's first commit split a shorter to-do list, and the chunks between
        # the two splits were never generated (seen in the data-parallel test under load).
        barrier(layout)
    if store is None and layout.data_parallel_size > 1:
        raise ConfigError("a data-parallel evaluation needs an output_dir (its ranks meet through the record files)")
    todo = [c for c in range(len(starts)) if c not in committed]
    mine = todo[layout.data_parallel_rank :: layout.data_parallel_size]
    done_problems = sum(sizes[c] for c in committed)
    if committed and layout.rank == 0:
        log.info("%s: resuming, %d of %d chunks already scored", run.name, len(committed), len(starts))
    progress = Progress(run.name, len(run.problems), done_problems, settings.progress_interval_s)
    fresh: dict[int, list[dict]] = {}
    for chunk in mine:
        start = starts[chunk]
        problems = run.problems[start : start + sizes[chunk]]
        chunk_prompts = prompts[start : start + sizes[chunk]]
        chunk_params = replace(params, seed=params.seed + chunk)
        samples = _generate_chunk(run, generator, chunk_prompts, problems, chunk_params, tools, settings, layout)
        if not layout.writer:
            continue
        scores = score_samples(problems, [[s["text"] for s in row] for row in samples], run.style, tools)
        records = _chunk_records(run, chunk, problems, chunk_prompts, samples, scores)
        if store is not None:
            store.commit(records)
        fresh[chunk] = records
        progress.advance(len(problems) * layout.data_parallel_size)
    barrier(layout)
    if layout.rank != 0:
        return None
    if store is not None:
        committed = store.committed(sizes)
    committed.update(fresh)
    missing = [c for c in range(len(starts)) if c not in committed]
    if missing:
        raise RuntimeError(f"{run.name}: chunks {missing[:5]} have no records after the run")
    positions = {problem.id: index for index, problem in enumerate(run.problems)}
    records = sorted((record for c in range(len(starts)) for record in committed[c]), key=lambda r: positions[r["id"]])
    progress.finish()
    return summarize(records, run.k_values, params, run.problems[0].kind, run.name)


def _sample_key(sample: dict, kind: str):
    if kind == KIND_CHOICE:
        return sample["answer"]
    return answer_key(sample["answer"])


def _breakdown(groups: dict[str, list[list[bool]]]) -> dict:
    table = {}
    for name, problems in sorted(groups.items()):
        flags = [flag for problem in problems for flag in problem]
        table[name] = {"problems": len(problems), "samples": len(flags), "accuracy": mean([float(f) for f in flags])}
    return table


def summarize(
    records: Sequence[dict], k_values: Sequence[int], params: SamplingParams, kind: str, name: str = ""
) -> EvaluationReport:
    """Metrics of a benchmark run from its per-problem records (module docstring)."""
    n = params.n
    k_values = sorted({k for k in k_values if 1 <= k <= n} | {1})
    gradable = [r for r in records if r["gradable"]]
    flags = [[bool(s["correct"]) for s in r["samples"]] for r in gradable]
    all_samples = [s for r in records for s in r["samples"]]
    summary: dict = {
        "benchmark": name,
        "problems": len(records),
        "gradable": len(gradable),
        "ungradable": len(records) - len(gradable),
        "samples_per_problem": n,
        "temperature": params.temperature,
        "greedy": params.temperature == 0 and n == 1,
        "accuracy": mean([float(f) for row in flags for f in row]),
    }
    for k in k_values:
        summary[f"pass@{k}"] = (
            float(np.mean(pass_at_k_vector([len(r) for r in flags], [sum(r) for r in flags], k))) if flags else 0.0
        )
    if kind != KIND_CODE:
        keys = [[_sample_key(s, kind) for s in r["samples"]] for r in gradable]
        for k in k_values:
            summary[f"cons@{k}"] = float(np.mean(consensus_at_k(keys, flags, k))) if flags else 0.0
    tokens = [s["tokens"] for s in all_samples if s.get("tokens")]
    summary.update(
        {
            "samples_without_answer": sum(s["answer"] is None for s in all_samples),
            "samples_timed_out": sum(bool(s.get("timed_out")) for s in all_samples),
            "samples_truncated": sum(s.get("finish_reason") == FINISH_LENGTH for s in all_samples),
            "samples_prompt_too_long": sum(s.get("finish_reason") == FINISH_PROMPT_TOO_LONG for s in all_samples),
            "mean_response_characters": mean([float(len(s["text"])) for s in all_samples]),
            "mean_response_tokens": mean([float(t) for t in tokens]) if tokens else None,
        }
    )
    groups: dict[str, dict[str, list[list[bool]]]] = {"subject": {}, "level": {}, "language": {}}
    for record, row in zip(gradable, flags):
        for group, fallback in (("subject", "all"), ("level", ""), ("language", "")):
            value = record.get(group) or fallback
            if value:
                groups[group].setdefault(str(value), []).append(row)
    return EvaluationReport(
        summary=summary,
        by_subject=_breakdown(groups["subject"]),
        by_level=_breakdown(groups["level"]),
        records=list(records),
        by_language=_breakdown(groups["language"]),
    )


def run_evaluation(
    problems: Sequence[Problem],
    generator: Generator,
    style: PromptStyle,
    params: SamplingParams,
    checker: AnswerChecker,
    sandbox: SandboxPool | None = None,
    k_values: Sequence[int] = (1,),
    exemplars: FewShot | None = None,
    code_sandbox: SandboxPool | None = None,
    settings: HarnessConfig | None = None,
) -> EvaluationReport:
    """One benchmark in memory (no output directory, nothing to resume)."""
    settings = settings or HarnessConfig()
    run = BenchmarkRun(problems[0].source if problems else "", list(problems), style, params, k_values, exemplars)
    tools = ScoringTools(checker, sandbox, code_sandbox or sandbox, settings.code_time_limit_s)
    report = run_benchmark(run, generator, tools, settings)
    assert report is not None  # one process: it writes
    return report


def format_table(report: EvaluationReport, title: str = "") -> str:
    lines = [f"## {title}" if title else "## Evaluation", "", "| metric | value |", "| --- | --- |"]
    for key, value in report.summary.items():
        lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    for heading, table in (
        ("subject", report.by_subject),
        ("level", report.by_level),
        ("language", report.by_language),
    ):
        if table:
            lines += ["", f"| {heading} | problems | samples | accuracy |", "| --- | --- | --- | --- |"]
            lines += [
                f"| {name} | {row['problems']} | {row['samples']} | {row['accuracy']:.4f} |"
                for name, row in table.items()
            ]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_report(
    report: EvaluationReport, output_dir: str | Path, config: dict | None = None, title: str = ""
) -> dict[str, Path]:
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"results": output / "results.json", "records": output / "records.jsonl", "table": output / "table.md"}
    _atomic_write(paths["records"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.records))
    _atomic_write(paths["table"], format_table(report, title))
    results = {
        "summary": report.summary,
        "by_subject": report.by_subject,
        "by_level": report.by_level,
        "by_language": report.by_language,
        "config": config or {},
    }
    # results.json last: its presence says the run finished (the chain and the suite look for it).
    _atomic_write(paths["results"], json.dumps(results, indent=2, ensure_ascii=False))
    return paths
