"""Isolated execution of model-written Python (program-of-thought, tool-integrated reasoning).

Public API:

    run_python(code, limits=SandboxLimits(), slot=0, use_namespaces=True) -> ExecutionResult
    SandboxPool(max_workers=2, limits=None).run(code) / .map(codes) -> ExecutionResult(s)
    ExecutionResult: stdout, stderr, exit_code, limit_hit (wall_time | cpu_time | memory | output |
        file_size | processes | None), wall_seconds, isolation, output_truncated, ok
    extract_python_blocks(text) -> list[str]
    run_tool_integrated(continue_text, prompt, sandbox, max_steps=4) -> ToolTrace
    generator_step(generator, params) -> continue_text
    program_answer(generation, sandbox) -> (answer | None, ExecutionResult | None)
"""

from megatron_recipes.sandbox.executor import (
    LIMIT_CPU_TIME,
    LIMIT_DISK,
    LIMIT_FILE_SIZE,
    LIMIT_MEMORY,
    LIMIT_OUTPUT,
    LIMIT_PROCESSES,
    LIMIT_WALL_TIME,
    ExecutionResult,
    SandboxLimits,
    SandboxPool,
    run_python,
)
from megatron_recipes.sandbox.tool_use import (
    ToolTrace,
    extract_python_blocks,
    format_output,
    generator_step,
    program_answer,
    run_tool_integrated,
)

__all__ = [
    "LIMIT_CPU_TIME",
    "LIMIT_DISK",
    "LIMIT_FILE_SIZE",
    "LIMIT_MEMORY",
    "LIMIT_OUTPUT",
    "LIMIT_PROCESSES",
    "LIMIT_WALL_TIME",
    "ExecutionResult",
    "SandboxLimits",
    "SandboxPool",
    "run_python",
    "ToolTrace",
    "extract_python_blocks",
    "format_output",
    "generator_step",
    "program_answer",
    "run_tool_integrated",
]
