"""Tool-integrated evaluation with the real sandbox: a model writes a program, sees its output and
answers. Programs that print answers, loop forever, crash, and a model that never stops writing
code (the step limit). The batched loop gives each trajectory the text that
sandbox.tool_use.run_tool_integrated gives it one at a time."""

import re

import pytest

from megatron_recipes.evaluation.config import HarnessConfig
from megatron_recipes.evaluation.harness import run_evaluation
from megatron_recipes.evaluation.problems import Problem
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from megatron_recipes.generation.interface import Generation, SamplingParams
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool
from megatron_recipes.sandbox import SandboxLimits, SandboxPool, generator_step, run_tool_integrated

PROGRAMS = {
    "Add 17 and 25.": "print(17 + 25)",
    "Count to infinity.": "n = 0\nwhile True:\n    n += 1",
    "Divide 1 by 0.": "print(1 // 0)",
    "Keep checking.": "print('still checking')",
}
ANSWERS = {"Add 17 and 25.": "42", "Count to infinity.": "7", "Divide 1 by 0.": "0", "Keep checking.": "3"}


class ProgramWritingModel:
    """A model stand-in with fixed behaviour: first turn, the program stored for the question; after
    an output block, an answer built from the last output (the persistent one writes a new block
    every turn). The loop under test, the sandbox and the scoring are real."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params, request_ids=None):
        self.calls += 1
        results = []
        for prompt in prompts:
            question = re.search(r"User: (.*?)\n", prompt).group(1)
            trajectory = prompt.split("Assistant:", 1)[1]
            outputs = re.findall(r"```output\n(.*?)\n```", trajectory, re.DOTALL)
            if not outputs or question == "Keep checking.":
                text = f" I will compute it.\n```python\n{PROGRAMS[question]}\n```"
            else:
                text = f"The program printed {outputs[-1]}, so the answer is $\\boxed{{{outputs[-1]}}}$."
            results.append([Generation(text) for _ in range(params.n)])
        return results


def same_time_limit(text: str) -> str:
    """The looping program stops at its CPU or its wall limit, whichever comes first under load."""
    return re.sub(r"(cpu|wall) time limit", "time limit", text)


@pytest.fixture(scope="module")
def tools():
    with (
        DeadlineWorkerPool(num_workers=1, task_timeout_s=5.0) as pool,
        SandboxPool(2, SandboxLimits(wall_seconds=5, cpu_seconds=1)) as sandbox,
    ):
        yield AnswerChecker(pool=pool), sandbox


def test_tool_integrated_runs_the_programs_and_feeds_their_output_back(tools):
    checker, sandbox = tools
    problems = [Problem(id=f"q{i}", question=q, answers=[ANSWERS[q]]) for i, q in enumerate(PROGRAMS)]
    model = ProgramWritingModel()
    style = PROMPT_STYLES["tool_integrated"]
    settings = HarnessConfig(tool_max_steps=2, chunk_size=4)
    report = run_evaluation(problems, model, style, SamplingParams(), checker, sandbox, settings=settings)
    records = {r["id"]: r["samples"][0] for r in report.records}
    printed, looping, crashing, persistent = (records[f"q{i}"] for i in range(4))
    assert printed["correct"] and printed["answer"] == "42" and printed["tool_steps"] == 1
    assert "```output\n42\n```" in printed["text"]
    assert looping["timed_out"] and not looping["correct"]
    # CPU seconds run out first on an idle machine, wall seconds on a loaded one: both are timeouts.
    limit = looping["tool_executions"][0]["limit_hit"]
    assert limit in ("cpu_time", "wall_time")
    assert f"Execution stopped: {limit.replace('_', ' ')} limit exceeded" in looping["text"]
    assert not crashing["correct"] and crashing["tool_executions"][0]["exit_code"] == 1
    assert "ZeroDivisionError" in crashing["text"]
    assert persistent["stopped_by_step_limit"] and persistent["tool_steps"] == 2 and persistent["answer"] is None
    assert report.summary["samples_timed_out"] == 1 and report.summary["accuracy"] == 0.25
    # Batched: one generator call per turn for the whole chunk (3 turns: code, code, last block left unrun).
    assert model.calls == 3
    # Each trajectory is what the one-at-a-time loop of sandbox.tool_use produces.
    for problem, record in zip(problems, report.records):
        prompt = style.build(problem)
        trace = run_tool_integrated(generator_step(ProgramWritingModel(), SamplingParams()), prompt, sandbox, 2)
        assert same_time_limit(trace.text) == same_time_limit(record["samples"][0]["text"])
        assert trace.steps == record["samples"][0]["tool_steps"]
