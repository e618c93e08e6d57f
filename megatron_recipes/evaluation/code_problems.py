"""Code benchmarks: readers, program extraction, and judging a program on every test in the sandbox.

Layouts read:
  livecodebench  LiveCodeBench's code_generation_lite release: JSONL files (test.jsonl,
                 test2.jsonl, ...; a directory reads them all) with "question_title",
                 "question_content", "platform", "question_id", "contest_date", "starter_code",
                 "difficulty", "public_test_cases" (a JSON list of {"input", "output",
                 "testtype": "stdin" | "functional"}), "private_test_cases" (the same list as JSON,
                 or zlib-compressed, pickled and base64-encoded as the release stores most of them;
                 decoded with an unpickler that admits plain strings only), "metadata" (JSON with
                 "func_name" for functional problems)
  codeforces     open-r1/codeforces Parquet/JSONL ("id", "title", "description", "input_format",
                 "output_format", "note", "examples" and "official_tests" as [{"input", "output"}],
                 "rating", "time_limit", "interaction_format", "input_mode"), or DeepMind's
                 code_contests ("name", "description", "public_tests"/"private_tests" as
                 {"input": [...], "output": [...]}, "cf_rating", "time_limit": {"seconds", "nanos"}).
                 Interactive and file-input problems are skipped (they need an interactor).

    extract_program(text) -> code of the last ```python (or bare ```) block, or None
    judge_programs(problems, programs, pool, default_time_limit_s) -> [JudgeReport | None]
        one sandboxed run per program (sandboxed_judge.py runs every test in it)

Cost: one sandbox process per sample; each test is a fork inside it, so a problem with T tests
costs T x (program run time + ~5 ms). Reading is linear in the file size.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import re
import zlib
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Sequence

from megatron_recipes.evaluation import sandboxed_judge
from megatron_recipes.evaluation.problems import (
    KIND_CODE,
    TEST_FUNCTIONAL,
    TEST_STDIN,
    CodeTest,
    DatasetError,
    Problem,
    data_files,
    field,
    read_rows,
    require_text,
)
from megatron_recipes.rewards.extraction import answer_region
from megatron_recipes.sandbox.executor import LIMIT_CPU_TIME, LIMIT_WALL_TIME, ExecutionResult, SandboxPool

log = logging.getLogger(__name__)

JUDGE_SOURCE = Path(sandboxed_judge.__file__).read_text(encoding="utf-8")


class _StringsOnly(pickle.Unpickler):
    """Unpickles plain data only: a pickle naming any class or function is refused, so a
    crafted benchmark file cannot run code while it is read."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def decode_test_cases(value) -> list:
    """A LiveCodeBench test list: a list, JSON text, or base64(zlib(pickle(JSON text)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        decoded = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(value.encode("ascii"))))).load()
        tests = json.loads(decoded) if isinstance(decoded, (str, bytes)) else decoded
    except Exception as error:  # base64, zlib, pickle and JSON each raise their own types
        raise DatasetError(f"test cases are neither JSON nor the compressed form ({type(error).__name__})") from None
    if not isinstance(tests, list):
        raise DatasetError(f"test cases decode to a {type(tests).__name__}, not a list")
    return tests


def _tests(items: list, where: str, default_mode: str = TEST_STDIN) -> list[CodeTest]:
    tests = []
    for item in items:
        if not isinstance(item, dict) or "input" not in item or "output" not in item:
            raise DatasetError(f"{where}: a test must have 'input' and 'output'")
        mode = item.get("testtype") or default_mode
        if mode not in (TEST_STDIN, TEST_FUNCTIONAL):
            raise DatasetError(f"{where}: unknown testtype {mode!r}")
        tests.append(CodeTest(str(item["input"]), str(item["output"]), mode))
    return tests


def _metadata(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


def load_livecodebench(path: str | Path) -> list[Problem]:
    problems = []
    for file in data_files(path, (".jsonl", ".json", ".parquet")):
        for where, record in read_rows(file):
            try:
                public = decode_test_cases(record.get("public_test_cases"))
                private = decode_test_cases(record.get("private_test_cases"))
            except DatasetError as error:
                raise DatasetError(f"{where}: {error}") from None
            tests = _tests(public, where) + _tests(private, where)
            if not tests:
                raise DatasetError(f"{where}: no test cases")
            entry_point = str(_metadata(record.get("metadata")).get("func_name", ""))
            if any(t.mode == TEST_FUNCTIONAL for t in tests) and not entry_point:
                raise DatasetError(f"{where}: functional tests but no metadata func_name")
            title = str(record.get("question_title") or "")
            content = require_text(record, where, "question_content")
            problems.append(
                Problem(
                    id=str(require_text(record, where, "question_id")),
                    question=f"{title}\n\n{content}".strip() if title else content,
                    answers=[],
                    subject=str(record.get("platform") or ""),
                    level=str(record.get("difficulty") or ""),
                    kind=KIND_CODE,
                    tests=tests,
                    starter_code=str(record.get("starter_code") or ""),
                    entry_point=entry_point,
                    extra={"date": str(record.get("contest_date") or "")},
                )
            )
    return problems


def _paired_tests(value) -> list[dict]:
    """code_contests' {"input": [...], "output": [...]} or a list of {"input", "output"}."""
    if isinstance(value, dict):
        return [{"input": i, "output": o} for i, o in zip(value.get("input") or [], value.get("output") or [])]
    return list(value or [])


def _codeforces_statement(record: dict, where: str) -> str:
    parts = [str(record.get("title") or record.get("name") or ""), require_text(record, where, "description")]
    for heading, key in (("Input", "input_format"), ("Output", "output_format")):
        if record.get(key):
            parts.append(f"{heading}\n{record[key]}")
    examples = _paired_tests(record.get("examples"))
    for number, example in enumerate(examples, 1):
        parts.append(f"Example {number}\nInput:\n{example['input']}\nOutput:\n{example['output']}")
    if record.get("note"):
        parts.append(f"Note\n{record['note']}")
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


def _time_limit(value) -> float | None:
    if isinstance(value, dict):
        return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9 or None
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def load_codeforces(path: str | Path) -> list[Problem]:
    problems, skipped = [], 0
    for file in data_files(path, (".jsonl", ".json", ".parquet")):
        for number, (where, record) in enumerate(read_rows(file), 1):
            if record.get("interaction_format") or record.get("input_mode") not in (None, "", "stdio"):
                skipped += 1
                continue
            tests = _paired_tests(record.get("official_tests"))
            tests = tests or _paired_tests(record.get("public_tests")) + _paired_tests(record.get("private_tests"))
            tests = tests or _paired_tests(record.get("examples"))
            if not tests:
                raise DatasetError(f"{where}: no tests (official_tests, public/private_tests or examples)")
            rating = field(record, "rating", "cf_rating", default="")
            problems.append(
                Problem(
                    id=str(field(record, "id", "name", default=f"codeforces-{number}")),
                    question=_codeforces_statement(record, where),
                    answers=[],
                    level=str(int(rating)) if isinstance(rating, (int, float)) and rating else str(rating or ""),
                    kind=KIND_CODE,
                    tests=_tests(tests, where),
                    time_limit_s=_time_limit(record.get("time_limit")),
                    extra={"date": str(record.get("contest_start_year") or "")},
                )
            )
    if skipped:
        log.info("codeforces: skipped %d interactive or file-input problems (they need an interactor)", skipped)
    return problems


_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(text: str | None) -> str | None:
    """The last fenced code block of the answer region (```python preferred), or None."""
    if not text:
        return None
    region = answer_region(text)
    python_blocks = re.findall(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", region, re.DOTALL | re.IGNORECASE)
    blocks = python_blocks or _FENCED.findall(region)
    code = blocks[-1].strip("\n") if blocks else ""
    return code if code.strip() else None


@dataclass
class JudgeReport:
    passed: bool
    tests_passed: int
    tests_total: int
    timed_out: bool
    compiled: bool
    detail: str = ""
    results: list[dict] = dataclass_field(default_factory=list)

    def as_record(self) -> dict:
        return {
            "tests_passed": self.tests_passed,
            "tests_total": self.tests_total,
            "timed_out": self.timed_out,
            "compiled": self.compiled,
            "detail": self.detail,
        }


def judge_program_source(problem: Problem, program: str, time_limit_s: float) -> str:
    tests = [{"input": t.input, "output": t.output, "mode": t.mode} for t in problem.tests]
    call = f"judge({program!r}, json.loads({json.dumps(tests)!r}), {problem.entry_point!r}, {float(time_limit_s)!r})"
    return f"{JUDGE_SOURCE}\n\n{call}\n"


def read_judge_output(result: ExecutionResult, total: int) -> JudgeReport:
    """The judge's report from its sandboxed run (a killed judge: every test not run failed)."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(sandboxed_judge.JUDGE_MARKER):
            report = json.loads(line[len(sandboxed_judge.JUDGE_MARKER) :])
            statuses = [r["status"] for r in report["results"]]
            failed = next((r for r in report["results"] if r["status"] != sandboxed_judge.STATUS_PASSED), None)
            return JudgeReport(
                passed=report["compiled"] and report["passed"] == report["total"],
                tests_passed=report["passed"],
                tests_total=report["total"],
                timed_out=sandboxed_judge.STATUS_TIMEOUT in statuses,
                compiled=report["compiled"],
                detail=report["error"] or (f"{failed['status']}: {failed['detail']}" if failed else ""),
                results=report["results"],
            )
    timed_out = result.limit_hit in (LIMIT_WALL_TIME, LIMIT_CPU_TIME)
    reason = result.limit_hit or f"exit status {result.exit_code}"
    return JudgeReport(False, 0, total, timed_out, True, detail=f"judge stopped: {reason}")


def judge_programs(
    problems: Sequence[Problem], programs: Sequence[str | None], pool: SandboxPool, default_time_limit_s: float
) -> list[JudgeReport | None]:
    """Judge programs[i] against problems[i]'s tests (None where there is no program)."""
    runnable = [i for i, program in enumerate(programs) if program]
    sources = [
        judge_program_source(problems[i], programs[i], problems[i].time_limit_s or default_time_limit_s)  # type: ignore[arg-type]
        for i in runnable
    ]
    results = pool.map(sources) if sources else []
    reports: list[JudgeReport | None] = [None] * len(programs)
    for index, result in zip(runnable, results):
        reports[index] = read_judge_output(result, len(problems[index].tests))
    return reports
