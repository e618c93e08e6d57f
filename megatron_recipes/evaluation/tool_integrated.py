"""Tool-integrated generation at evaluation scale: every trajectory of a chunk is continued in one
batched generator call, their pending programs run together in the sandbox, and their outputs are
appended, turn after turn.

A turn: the model continues `prompt + trajectory` until it starts an ```output block (the stop
string) or ends; if the continuation closed a ```python block that has no output yet, the block
runs in the sandbox and its output (sandbox.tool_use.format_output) is appended as an
```output block. A trajectory ends when the model writes no new block, when it stops for length,
or after `max_steps` executions (then the last pending block is left unrun: the same rule as
sandbox.tool_use.run_tool_integrated, which does this for one trajectory at a time).

    generate_tool_integrated(generator, prompts, params, sandbox, max_steps, ...) -> [[ToolTrajectory]]

Cost: up to max_steps + 1 generator calls per chunk, each over the chunk's unfinished
trajectories; one sandboxed process per executed block, `max_workers` at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Sequence

from megatron_recipes.evaluation.distributed import Layout, share_from_writer
from megatron_recipes.generation.interface import FINISH_LENGTH, Generator, SamplingParams
from megatron_recipes.sandbox.executor import ExecutionResult, SandboxPool
from megatron_recipes.sandbox.tool_use import OUTPUT_STOP, format_output

_PYTHON_BLOCK = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)


@dataclass
class ToolTrajectory:
    text: str = ""  # everything after the prompt: model text and output blocks
    finish_reason: str = ""
    tokens: int = 0
    executions: list[dict] = field(default_factory=list)  # exit code and limit hit of each block
    stopped_by_step_limit: bool = False

    @property
    def steps(self) -> int:
        return len(self.executions)


def pending_code(continuation: str) -> str | None:
    """The last python block of a continuation if it is closed and has no output after it."""
    blocks = list(_PYTHON_BLOCK.finditer(continuation))
    if not blocks or OUTPUT_STOP in continuation[blocks[-1].end() :]:
        return None
    return blocks[-1].group(1).strip("\n")


def generate_tool_integrated(
    generator: Generator,
    prompts: Sequence[str],
    params: SamplingParams,
    sandbox: SandboxPool | None,
    max_steps: int = 4,
    max_output_characters: int = 800,
    request_ids: Sequence[str] | None = None,
    layout: Layout | None = None,
) -> list[list[ToolTrajectory]]:
    """params.n trajectories per prompt (in prompt order)."""
    layout = layout or Layout()
    owners = [index for index in range(len(prompts)) for _ in range(params.n)]
    trajectories = [ToolTrajectory() for _ in owners]
    step_params = replace(params, n=1, stop=list(dict.fromkeys([*params.stop, OUTPUT_STOP])))
    active = list(range(len(trajectories)))
    turn = 0
    while active:
        contexts = [prompts[owners[t]] + trajectories[t].text for t in active]
        ids = [f"{request_ids[owners[t]]}#{t % params.n}@{turn}" for t in active] if request_ids else None
        outputs = generator.generate(contexts, replace(step_params, seed=params.seed + turn), request_ids=ids)
        pending: dict[int, str] = {}
        for t, samples in zip(active, outputs):
            trajectory, generation = trajectories[t], samples[0]
            continuation = generation.text
            if continuation.endswith(OUTPUT_STOP):  # a generator that keeps the stop string
                continuation = continuation[: -len(OUTPUT_STOP)]
            trajectory.text += continuation
            trajectory.finish_reason = generation.finish_reason
            trajectory.tokens += len(generation.token_ids)
            code = pending_code(continuation)
            if code is None or generation.finish_reason == FINISH_LENGTH:
                continue
            if trajectory.steps >= max_steps:
                trajectory.stopped_by_step_limit = True
                continue
            pending[t] = code
        if not pending:
            break
        if sandbox is None:
            raise ValueError("tool-integrated generation needs a sandbox")
        results: list[ExecutionResult] | None = sandbox.map(list(pending.values())) if layout.writer else None
        results = share_from_writer(results, layout)
        for t, result in zip(pending, results):
            trajectory = trajectories[t]
            trajectory.executions.append({"exit_code": result.exit_code, "limit_hit": result.limit_hit})
            if not trajectory.text.endswith("\n"):
                trajectory.text += "\n"
            trajectory.text += format_output(result, max_output_characters)
        active = list(pending)
        turn += 1
    return [trajectories[index * params.n : (index + 1) * params.n] for index in range(len(prompts))]
