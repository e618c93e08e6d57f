"""Tool-integrated reasoning and program-of-thought on top of the sandbox.

Tool-integrated reasoning (ToRA / DeepSeekMath-Instruct style): the model writes prose and
```python blocks; after each block the program is run and its output is fed back as an
```output block, and the model continues, up to `max_steps` executions.

    run_tool_integrated(continue_text, prompt, sandbox, max_steps=4) -> ToolTrace
        continue_text(context) -> str: the model's continuation of context, ending after a
        ```python block is closed (stop string "```output" or the block's closing fence) or at
        the end of the answer. `generator_step(generator, params)` adapts a `Generator`.

Program-of-thought: `program_answer(generation, sandbox)` runs the last ```python block of a
generation (or the whole text when it has no fence) and reads the answer from the last printed line.

Cost: one sandboxed process per executed block (~0.1 s plus the program's own time); the context
grows by each block's output, capped at `max_output_characters` per block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable

from megatron_recipes.sandbox.executor import ExecutionResult, SandboxPool

_PYTHON_BLOCK = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)
_OPEN_PYTHON_BLOCK = re.compile(r"```python[ \t]*\n((?:(?!```).)*)$", re.DOTALL)
OUTPUT_STOP = "```output"


def extract_python_blocks(text: str) -> list[str]:
    """The code of every closed ```python block, in order."""
    return [block.strip("\n") for block in _PYTHON_BLOCK.findall(text)]


def format_output(result: ExecutionResult, max_output_characters: int = 800) -> str:
    """What the model sees after a block: stdout, or the error's last line, or the limit hit."""
    if result.limit_hit:
        body = f"Execution stopped: {result.limit_hit.replace('_', ' ')} limit exceeded"
    elif result.exit_code != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        body = lines[-1] if lines else f"exit status {result.exit_code}"
    else:
        body = result.stdout.rstrip("\n")
    if len(body) > max_output_characters:
        body = body[: max_output_characters // 2] + "\n...\n" + body[-max_output_characters // 2 :]
    return f"```output\n{body}\n```\n"


@dataclass
class ToolTrace:
    text: str  # the whole trajectory after the prompt: model text and output blocks
    executions: list[ExecutionResult] = field(default_factory=list)
    steps: int = 0
    stopped_by_step_limit: bool = False


def _pending_code(continuation: str) -> str | None:
    """The code of the last python block in a continuation if it is closed and not yet answered."""
    blocks = list(_PYTHON_BLOCK.finditer(continuation))
    if not blocks:
        return None
    last = blocks[-1]
    if "```output" in continuation[last.end() :]:
        return None
    return last.group(1).strip("\n")


def run_tool_integrated(
    continue_text: Callable[[str], str],
    prompt: str,
    sandbox: SandboxPool,
    max_steps: int = 4,
    max_output_characters: int = 800,
) -> ToolTrace:
    """Alternate model continuations and sandboxed executions until the model writes no new
    block, or max_steps blocks have run (then the model gets one last turn to answer)."""
    trace = ToolTrace(text="")
    while True:
        continuation = continue_text(prompt + trace.text)
        if continuation.endswith(OUTPUT_STOP):  # the stop string itself is ours to write
            continuation = continuation[: -len(OUTPUT_STOP)]
        trace.text += continuation
        code = _pending_code(continuation)
        if code is None:
            return trace
        if trace.steps >= max_steps:
            trace.stopped_by_step_limit = True
            return trace
        result = sandbox.run(code)
        trace.executions.append(result)
        trace.steps += 1
        if not trace.text.endswith("\n"):
            trace.text += "\n"
        trace.text += format_output(result, max_output_characters)


def generator_step(generator, params) -> Callable[[str], str]:
    """Adapt a `generation.interface.Generator` to `continue_text` (one sample, stop at output)."""
    stops = list(dict.fromkeys([*params.stop, OUTPUT_STOP]))
    step_params = replace(params, n=1, stop=stops)

    def continue_text(context: str) -> str:
        return generator.generate([context], step_params)[0][0].text

    return continue_text


def program_answer(generation: str, sandbox: SandboxPool) -> tuple[str | None, ExecutionResult | None]:
    """Program-of-thought: run the last python block (or the whole text) and return the last line
    it printed as the answer (None when it printed nothing or failed), with the execution."""
    blocks = extract_python_blocks(generation)
    if blocks:
        code = blocks[-1]
    else:
        open_block = _OPEN_PYTHON_BLOCK.search(generation)
        code = open_block.group(1) if open_block else generation
    if not code.strip():
        return None, None
    result = sandbox.run(code)
    if not result.ok:
        return None, result
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return (lines[-1] if lines else None), result
