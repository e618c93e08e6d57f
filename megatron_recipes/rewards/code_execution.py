"""Code-execution accuracy (DeepSeek-R1's rule-based reward for coding problems): run the program a
completion wrote against the problem's test cases in the sandbox.

    parse_test_cases(reference) -> TestSuite | None
    program_of(completion) -> str | None                  the last ```python block of the answer part
    run_test_suite(program, suite, pool=None) -> list[TestOutcome]
    code_rewards(completions, references, all_pass, pool=None) -> list[float | None]

A reference is JSON: `{"tests": [{"input": "1 2\\n", "output": "3\\n"}, ...], "time_limit_s": 2}`
or the bare list of tests. Each test runs the program once in a fresh sandboxed process
(megatron_recipes.sandbox: no network, private files, memory/process caps) with the test's input
on standard input, held to `time_limit_s` of CPU time (rounded up to whole seconds; CPU time, as
judges count it, does not depend on how loaded the machine is) and to 5 x that + 5 s of wall time
(a program that sleeps or blocks); it passes
when its standard output equals the expected output, compared line by line with trailing spaces
and trailing blank lines ignored, and the program exited 0 within its limits. The reward is the
share of tests passed (`code_pass_rate`) or 1.0 only when all pass (`code_all_pass`); a completion
without a program scores 0.0; a reference that is not a test suite gives None (ungradable).

The program is read from the answer part (after `</think>`, see extraction.answer_region), so code
drafted in the reasoning is not what gets run.

Cost: one sandboxed process per (completion, test), run `pool.max_workers` at a time.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Sequence

from megatron_recipes.rewards.extraction import answer_region
from megatron_recipes.sandbox import SandboxLimits, SandboxPool, extract_python_blocks

DEFAULT_TIME_LIMIT_S = 2.0


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str


@dataclass(frozen=True)
class TestSuite:
    tests: tuple[TestCase, ...]
    time_limit_s: float = DEFAULT_TIME_LIMIT_S


@dataclass(frozen=True)
class TestOutcome:
    passed: bool
    reason: str  # passed | wrong_output | exit_code | <the sandbox limit hit>


def parse_test_cases(reference: str | None) -> TestSuite | None:
    """The test suite a reference describes, or None when it is not one."""
    if reference is None:
        return None
    try:
        data = json.loads(reference) if isinstance(reference, str) else reference
    except (ValueError, RecursionError):  # not JSON (or a number too long to read), or nested too deep
        return None
    if isinstance(data, list):
        data = {"tests": data}
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list) or not data["tests"]:
        return None
    tests = []
    for test in data["tests"]:
        if not isinstance(test, dict) or not isinstance(test.get("output"), str):
            return None
        tests.append(TestCase(str(test.get("input", "")), test["output"]))
    limit = data.get("time_limit_s", DEFAULT_TIME_LIMIT_S)
    if not isinstance(limit, (int, float)) or limit <= 0:
        return None
    return TestSuite(tuple(tests), float(limit))


def program_of(completion: str) -> str | None:
    blocks = extract_python_blocks(answer_region(completion or ""))
    return blocks[-1] if blocks and blocks[-1].strip() else None


def with_standard_input(program: str, text: str) -> str:
    """The program preceded by a line that puts `text` on its standard input (the sandbox gives
    programs none of their own); input() and sys.stdin both read it."""
    return f"import io as _io, sys as _sys; _sys.stdin = _io.StringIO({text!r})\n{program}"


def outputs_match(actual: str, expected: str) -> bool:
    def lines(text: str) -> list[str]:
        rows = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    return lines(actual) == lines(expected)


_POOLS: dict[float, SandboxPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(time_limit_s: float, max_workers: int = 2) -> SandboxPool:
    """A sandbox pool whose programs get ceil(time_limit_s) CPU seconds and 5 x time_limit_s + 5
    wall seconds (one pool per limit, kept for the process)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(time_limit_s)
        if pool is None:
            limits = SandboxLimits(wall_seconds=5 * time_limit_s + 5, cpu_seconds=max(1, math.ceil(time_limit_s)))
            pool = _POOLS[time_limit_s] = SandboxPool(max_workers, limits)
        return pool


def _outcome(result, expected: str) -> TestOutcome:
    if result.limit_hit:
        return TestOutcome(False, result.limit_hit)
    if result.exit_code != 0:
        return TestOutcome(False, "exit_code")
    if not outputs_match(result.stdout, expected):
        return TestOutcome(False, "wrong_output")
    return TestOutcome(True, "passed")


def run_test_suite(program: str, suite: TestSuite, pool: SandboxPool | None = None) -> list[TestOutcome]:
    pool = pool or pool_for(suite.time_limit_s)
    results = pool.map([with_standard_input(program, test.input) for test in suite.tests])
    return [_outcome(result, test.output) for test, result in zip(suite.tests, results)]


def code_rewards(
    completions: Sequence[str], references: Sequence[str | None], all_pass: bool, pool: SandboxPool | None = None
) -> list[float | None]:
    """Every (completion, test) run of the batch goes to the sandbox in one map per time limit."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    rewards: list[float | None] = [None] * len(completions)
    jobs: dict[float, list[tuple[int, TestCase, str]]] = {}
    for index, (completion, reference) in enumerate(zip(completions, references)):
        suite = parse_test_cases(reference)
        if suite is None:
            continue
        program = program_of(completion)
        rewards[index] = 0.0
        if program is not None:
            jobs.setdefault(suite.time_limit_s, []).extend((index, test, program) for test in suite.tests)
    passed: dict[int, list[bool]] = {}
    for limit, runs in jobs.items():
        results = (pool or pool_for(limit)).map([with_standard_input(program, test.input) for _, test, program in runs])
        for (index, test, _), result in zip(runs, results):
            passed.setdefault(index, []).append(_outcome(result, test.output).passed)
    for index, flags in passed.items():
        rewards[index] = float(all(flags)) if all_pass else sum(flags) / len(flags)
    return rewards
