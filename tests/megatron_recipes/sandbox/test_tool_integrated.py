"""Tool-integrated reasoning and program-of-thought with real sandboxed executions.

The "model" here is a scripted continuation function (the thing under test is the loop and the
sandbox); it checks that it really sees the executed output before continuing.
"""

import pytest

from megatron_recipes.sandbox import (
    SandboxLimits,
    SandboxPool,
    extract_python_blocks,
    program_answer,
    run_tool_integrated,
)


@pytest.fixture(scope="module")
def pool():
    # Limits far above what the programs need: no result may depend on the machine's load.
    with SandboxPool(max_workers=1, limits=SandboxLimits(wall_seconds=120, cpu_seconds=30)) as sandboxes:
        yield sandboxes


def test_extract_python_blocks():
    text = "a\n```python\nprint(1)\n```\nb\n```python\nx = 2\nprint(x)\n```\n```python\nunclosed"
    assert extract_python_blocks(text) == ["print(1)", "x = 2\nprint(x)"]


def test_outputs_are_fed_back_between_steps(pool):
    seen_contexts = []

    def scripted_model(context: str) -> str:
        seen_contexts.append(context)
        if "```output" not in context:
            return "Let me compute.\n```python\nfrom math import comb\nprint(comb(10, 5))\n```\n```output"
        if context.count("```output") == 1:
            assert "```output\n252\n```" in context
            return "Now halve it.\n```python\nprint(252 // 2)\n```"
        assert "```output\n126\n```" in context
        return "So the answer is \\boxed{126}."

    trace = run_tool_integrated(scripted_model, "Question: ...\n", pool, max_steps=4)
    assert trace.steps == 2 and not trace.stopped_by_step_limit
    assert [r.stdout for r in trace.executions] == ["252\n", "126\n"]
    assert trace.text.endswith("\\boxed{126}.")
    assert len(seen_contexts) == 3


def test_step_limit_and_errors_are_reported(pool):
    def looping_model(context: str) -> str:
        return "again\n```python\nprint(undefined_name)\n```\n"

    trace = run_tool_integrated(looping_model, "Q\n", pool, max_steps=2)
    assert trace.steps == 2 and trace.stopped_by_step_limit
    assert "NameError: name 'undefined_name' is not defined" in trace.text


def test_program_of_thought_answer(pool):
    generation = (
        "We solve it with code.\n```python\nfrom fractions import Fraction\nprint('work')\n"
        "print(Fraction(3, 4) + Fraction(1, 4) * 2)\n```"
    )
    answer, result = program_answer(generation, pool)
    assert answer == "5/4" and result.ok
    assert (
        program_answer(
            "```python\nwhile True: pass\n```", SandboxPool(1, SandboxLimits(wall_seconds=3, cpu_seconds=1))
        )[0]
        is None
    )
