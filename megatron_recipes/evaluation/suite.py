"""The suite runner: every benchmark of a suite whose files are present, on one or several
checkpoints, in one table laid out like the papers' (rows = checkpoints, columns = benchmarks).

    python -m megatron_recipes.evaluate suite=deepseekmath generator=megatron \\
        suite.benchmarks_dir=/data/benchmarks 'suite.checkpoints=[/runs/base/checkpoints,/runs/sft/checkpoints]'
    python -m megatron_recipes.evaluate +experiment=chain_suite suite.chain_dir=outputs/chain

Suites (conf/suite/): deepseekmath (the base-model tables: few-shot chain-of-thought on GSM8K,
MATH, OCW, SAT, MMLU-STEM, CMATH, Gaokao-MathCloze, Gaokao-MathQA, and few-shot
program-of-thought on GSM8K and MATH), deepseekmath_instruct (zero-shot chain-of-thought on
GSM8K, MATH, MGSM-zh, CMATH, and tool-integrated GSM8K and MATH), r1 (AIME 2024 pass@1 and
cons@64, MATH-500, GPQA Diamond, LiveCodeBench, Codeforces: pass@1 from k samples at
temperature 0.6) and chain (CHAMP and the chain's held-out arithmetic set).

A benchmark whose files are not found is skipped and listed (with the paths tried). Outputs under
`output_dir`: suite.md, suite.json, suite.html (the table, then per-subject / level / language
bars for every benchmark with a breakdown), and per row and column `<row>/<column>/` with
results.json, records.jsonl (per problem: prompt, samples, answers, verdicts) and table.md.
Re-running the command resumes: finished cells are read back, a cut one continues.

Cost: the sum of its cells (see harness.py); the tables are linear in rows x columns.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from megatron_recipes.evaluation.config import HarnessConfig, SuiteBenchmark
from megatron_recipes.evaluation.datasets import DATASETS, BenchmarkSpec, find_benchmark_path, load_problems
from megatron_recipes.evaluation.distributed import current_layout
from megatron_recipes.evaluation.harness import (
    BenchmarkRun,
    EvaluationReport,
    file_identity,
    run_benchmark,
    write_report,
)
from megatron_recipes.evaluation.prompts import PROMPT_STYLES, load_exemplars
from megatron_recipes.evaluation.scoring import ScoringTools
from megatron_recipes.generation.config import GeneratorConfig
from megatron_recipes.generation.interface import Generator, PrecomputedGenerations, SamplingParams, build_generator
from megatron_recipes.training.checkpointing import CheckpointError, resolve_checkpoint
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)

CHAIN_ROWS = (("base", "pretrain"), ("sft", "sft"), ("grpo", "grpo"))


@dataclass
class SuiteEntry:
    """A suite benchmark resolved: its spec, style, files, sampling and table columns."""

    config: SuiteBenchmark
    spec: BenchmarkSpec
    style_name: str
    title: str  # column title without the metric
    key: str  # directory name of its cells
    path: Path | None
    params: SamplingParams

    def columns(self) -> list[str]:
        if self.config.metrics == ["accuracy"]:
            return [self.title]
        return [f"{self.title} {metric}" for metric in self.config.metrics]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_").lower() or "column"


def plan_entries(
    benchmarks: list[SuiteBenchmark], benchmarks_dir: str, sampling: SamplingParams, only: list[str]
) -> tuple[list[SuiteEntry], list[dict]]:
    """The suite's benchmarks with files present, and the missing ones (with the paths tried)."""
    entries, missing = [], []
    titles_seen: set[str] = set()
    for benchmark in benchmarks:
        spec = DATASETS[benchmark.benchmark]
        style = benchmark.prompt_style or spec.default_style
        title = benchmark.column or (spec.title if style == spec.default_style else f"{spec.title} ({style})")
        if title in titles_seen:
            raise ConfigError(f"suite: two benchmarks have the column {title!r}: give one a column name")
        titles_seen.add(title)
        if only and benchmark.benchmark not in only and title not in only:
            continue
        params = replace(
            sampling,
            n=benchmark.n if benchmark.n is not None else sampling.n,
            temperature=benchmark.temperature if benchmark.temperature is not None else sampling.temperature,
            top_p=benchmark.top_p if benchmark.top_p is not None else sampling.top_p,
            max_new_tokens=benchmark.max_new_tokens
            if benchmark.max_new_tokens is not None
            else sampling.max_new_tokens,
        )
        path: Path | None
        if benchmark.path:
            path = Path(benchmark.path) if Path(benchmark.path).is_absolute() else Path(benchmarks_dir) / benchmark.path
            tried = [str(path)]
            if not path.exists():
                path = None
        elif spec.bundled:
            path, tried = None, []
        else:
            path = find_benchmark_path(spec.name, benchmarks_dir) if benchmarks_dir else None
            tried = [str(Path(benchmarks_dir) / layout) for layout in spec.layouts]
        if path is None and not spec.bundled:
            missing.append({"benchmark": spec.name, "column": title, "tried": tried})
            continue
        entries.append(SuiteEntry(benchmark, spec, style, title, slug(title), path, params))
    return entries, missing


def suite_rows(checkpoints: list[str], names: list[str], chain_dir: str) -> list[tuple[str, str]]:
    """(row name, checkpoint or generations path) of every row."""
    if checkpoints:
        rows = []
        for index, checkpoint in enumerate(checkpoints):
            path = Path(checkpoint)
            default = path.parent.name if path.name == "checkpoints" else path.name
            rows.append((names[index] if names else default, checkpoint))
        if len({name for name, _ in rows}) != len(rows):
            raise ConfigError(f"suite rows have the same name ({[n for n, _ in rows]}): set suite.names=[...]")
        return rows
    rows = [
        (name, str(Path(chain_dir) / run / "checkpoints"))
        for name, run in CHAIN_ROWS
        if (Path(chain_dir) / run / "checkpoints").is_dir()
    ]
    if not rows:
        raise ConfigError(f"suite.chain_dir={chain_dir} has no pretrain/, sft/ or grpo/ checkpoints")
    return rows


def _metric(report: EvaluationReport, metric: str) -> float | None:
    value = report.summary.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def format_suite_markdown(table: dict) -> str:
    columns = [c["title"] for c in table["columns"]]
    lines = [f"## {table['suite'] or 'suite'}", "", "| model | " + " | ".join(columns) + " |"]
    lines.append("| --- |" + " ---: |" * len(columns))
    for row in table["rows"]:
        cells = [row["cells"].get(column) for column in columns]
        lines.append(f"| {row['name']} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in cells) + " |")
    lines += ["", "Values are percentages (accuracy = pass@1, the mean over samples)."]
    if table["missing"]:
        lines += ["", "Skipped (files not found):"]
        lines += [f"- {m['column']}: tried {', '.join(m['tried']) or 'no path'}" for m in table["missing"]]
    return "\n".join(lines) + "\n"


def _bars(groups: dict[str, dict[str, dict]]) -> str:
    """One bar per (group value, row): groups[value][row] = {"accuracy", "samples"}."""
    parts = []
    for value, by_row in groups.items():
        parts.append(f"<div class='group'><div class='label'>{html.escape(value)}</div>")
        for row, cell in by_row.items():
            width = max(0.0, min(100.0, 100 * cell["accuracy"]))
            parts.append(
                f"<div class='bar'><span class='row'>{html.escape(row)}</span>"
                f"<span class='track'><span class='fill' style='width:{width:.1f}%'></span></span>"
                f"<span class='value'>{100 * cell['accuracy']:.1f} ({cell['samples']})</span></div>"
            )
        parts.append("</div>")
    return "".join(parts)


def format_suite_html(table: dict) -> str:
    columns = [c["title"] for c in table["columns"]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in table["rows"]:
        cells = "".join(
            "<td>-</td>" if row["cells"].get(c) is None else f"<td>{100 * row['cells'][c]:.1f}</td>" for c in columns
        )
        body.append(f"<tr><th>{html.escape(row['name'])}</th>{cells}</tr>")
    sections = []
    for entry in table["benchmarks"]:
        key = entry["key"]
        for breakdown in ("by_subject", "by_level", "by_language"):
            groups: dict[str, dict[str, dict]] = {}
            for row in table["rows"]:
                detail = row["details"].get(key)
                for value, cell in (detail or {}).get(breakdown, {}).items():
                    groups.setdefault(value, {})[row["name"]] = cell
            if len(groups) > 1:
                heading = f"{entry['title']}: accuracy {breakdown.replace('_', ' ')}"
                sections.append(f"<h3>{html.escape(heading)}</h3>{_bars(groups)}")
        links = [
            f"<a href='{html.escape(row['details'][key]['records'])}'>{html.escape(row['name'])}</a>"
            for row in table["rows"]
            if key in row["details"]
        ]
        if links:
            sections.append(f"<p>{html.escape(entry['title'])} per-problem records: {' '.join(links)}</p>")
    missing = "".join(
        f"<li>{html.escape(m['column'])}: tried {html.escape(', '.join(m['tried']) or 'no path')}</li>"
        for m in table["missing"]
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}.group{margin:6px 0}.label{font-weight:bold}.bar{display:flex;"
        "align-items:center;gap:6px}.row{width:8em}.track{width:300px;height:12px;background:#eee;display:inline-block}"
        ".fill{height:12px;background:#4a7ebb;display:block}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(table['suite'])}</title>"
        f"<style>{style}</style></head><body><h1>Evaluation suite {html.escape(table['suite'])}</h1>"
        f"<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"
        "<p>Values are percentages (accuracy = pass@1, the mean over samples).</p>"
        + (f"<h2>Skipped (files not found)</h2><ul>{missing}</ul>" if missing else "")
        + "<h2>Breakdowns</h2>"
        + "".join(sections)
        + "</body></html>"
    )


def write_suite_tables(table: dict, output_dir: str | Path) -> dict[str, Path]:
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output / "suite.md", "json": output / "suite.json", "html": output / "suite.html"}
    paths["markdown"].write_text(format_suite_markdown(table), encoding="utf-8")
    paths["html"].write_text(format_suite_html(table), encoding="utf-8")
    paths["json"].write_text(json.dumps(table, indent=2, ensure_ascii=False), encoding="utf-8")
    return paths


def run_entry(
    entry: SuiteEntry,
    generator: Generator,
    tools: ScoringTools,
    harness: HarnessConfig,
    dataset_options: dict,
    output_dir: Path,
    identity: dict,
) -> EvaluationReport | None:
    problems = load_problems(
        entry.spec.name, str(entry.path) if entry.path else None, limit=entry.config.limit, **dataset_options
    )
    if not problems:
        raise ConfigError(f"suite: {entry.title} at {entry.path} holds no problems after filtering")
    exemplars = load_exemplars(entry.config.exemplars) if entry.config.exemplars else None
    run = BenchmarkRun(
        entry.key, problems, PROMPT_STYLES[entry.style_name], entry.params, entry.config.k_values(), exemplars
    )
    report = run_benchmark(run, generator, tools, harness, output_dir, identity)
    if report is not None:
        write_report(report, output_dir, title=f"{entry.title} / {entry.style_name}")
    return report


class PrecomputedRow:
    """A row of precomputed generations: one JSONL file for every column, or a directory of
    `<column key>.jsonl` files (a column without its file is left empty)."""

    def __init__(self, path: str):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"suite: generations {self.path} not found")

    def file_for(self, entry: SuiteEntry) -> Path | None:
        if self.path.is_file():
            return self.path
        candidate = self.path / f"{entry.key}.jsonl"
        return candidate if candidate.exists() else None

    def generator_for(self, entry: SuiteEntry) -> Generator | None:
        file = self.file_for(entry)
        return PrecomputedGenerations(file) if file else None

    def identity(self, entry: SuiteEntry) -> dict:
        file = self.file_for(entry)
        return {"generator": "precomputed", **(file_identity(file) if file else {})}


class CheckpointRow:
    """A row of one checkpoint: its model is built once and asked every column."""

    def __init__(self, generator: Generator, checkpoint: str, generator_name: str):
        self.generator, self.generator_name = generator, generator_name
        self.checkpoint = str(resolve_checkpoint(checkpoint))

    def generator_for(self, entry: SuiteEntry) -> Generator:
        return self.generator

    def identity(self, entry: SuiteEntry) -> dict:
        return {"generator": self.generator_name, "checkpoint": self.checkpoint}


@contextlib.contextmanager
def open_row(generator_config: GeneratorConfig, path: str):
    """The row's generators: precomputed files, or a model built from the checkpoint (freed after)."""
    if generator_config.name == "precomputed":
        yield PrecomputedRow(path)
        return
    try:
        resolve_checkpoint(path)
    except (CheckpointError, FileNotFoundError) as error:
        raise ConfigError(f"suite: {error}") from None
    options = {k: v for k, v in asdict(generator_config).items() if k not in ("name", "checkpoint", "path")}
    generator = build_generator(generator_config.name, checkpoint=path, **options)
    try:
        yield CheckpointRow(generator, path, generator_config.name)
    finally:
        del generator
        gc.collect()


def run_suite(config, tools: ScoringTools) -> dict | None:
    """Evaluate every row on every present benchmark; returns the table (on the writing rank)."""
    suite = config.suite
    benchmarks_dir = suite.benchmarks_dir or (
        str(Path(suite.chain_dir) / "inputs" / "benchmarks") if suite.chain_dir else ""
    )
    entries, missing = plan_entries(suite.benchmarks, benchmarks_dir, config.sampling, suite.only)
    rows = suite_rows(suite.checkpoints, suite.names, suite.chain_dir)
    layout = current_layout()
    for item in missing:
        if layout.rank == 0:
            log.info("suite %s: skipping %s (none of %s exists)", suite.name, item["column"], ", ".join(item["tried"]))
    if not entries:
        raise ConfigError(
            f"suite {suite.name}: no benchmark files found under suite.benchmarks_dir={benchmarks_dir or '(unset)'}"
        )
    dataset_options = {
        "choice_seed": config.dataset.choice_seed,
        "date_from": config.dataset.date_from,
        "date_to": config.dataset.date_to,
    }
    output = Path(config.output_dir)
    table_rows = []
    for name, path in rows:
        cells: dict[str, float | None] = {}
        details: dict[str, dict] = {}
        with open_row(config.generator, path) as row:
            for entry in entries:
                generator = row.generator_for(entry)
                if generator is None:
                    log.info("suite %s: row %s has no generations for %s", suite.name, name, entry.title)
                    continue
                cell_dir = output / slug(name) / entry.key
                report = run_entry(
                    entry, generator, tools, config.harness, dataset_options, cell_dir, row.identity(entry)
                )
                if report is None:
                    continue
                for column, metric in zip(entry.columns(), entry.config.metrics):
                    cells[column] = _metric(report, metric)
                details[entry.key] = {
                    "summary": report.summary,
                    "by_subject": report.by_subject,
                    "by_level": report.by_level,
                    "by_language": report.by_language,
                    "records": str((cell_dir / "records.jsonl").relative_to(output)),
                }
        table_rows.append({"name": name, "checkpoint": path, "cells": cells, "details": details})
    if layout.rank != 0:
        return None
    table = {
        "suite": suite.name,
        "columns": [
            {"title": column, "benchmark": e.spec.name, "prompt_style": e.style_name, "metric": metric}
            for e in entries
            for column, metric in zip(e.columns(), e.config.metrics)
        ],
        "benchmarks": [
            {
                "key": e.key,
                "title": e.title,
                "benchmark": e.spec.name,
                "prompt_style": e.style_name,
                "path": str(e.path or ""),
                "sampling": asdict(e.params),
            }
            for e in entries
        ],
        "rows": table_rows,
        "missing": missing,
    }
    paths = write_suite_tables(table, output)
    log.info("%s", format_suite_markdown(table))
    log.info("suite %s: wrote %s, %s, %s", suite.name, paths["markdown"], paths["json"], paths["html"])
    return table
