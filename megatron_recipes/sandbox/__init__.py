"""Isolated execution of model-written Python (program-of-thought, tool-integrated reasoning).

Public API:

    run_python(code, limits=SandboxLimits(), slot=0, use_namespaces=True) -> ExecutionResult
    SandboxPool(max_workers=2, limits=None).run(code) / .map(codes) -> ExecutionResult(s)
    ExecutionResult: stdout, stderr, exit_code, limit_hit (wall_time | cpu_time | memory | output |
        file_size | disk | processes | None), wall_seconds, isolation, output_truncated, ok,
        cgroup ("v2" | "v1" | None), cgroup_fallback (why not v2), cgroup_events, private_dirs
    extract_python_blocks(text) -> list[str]
    run_tool_integrated(continue_text, prompt, sandbox, max_steps=4) -> ToolTrace
    generator_step(generator, params) -> continue_text
    program_answer(generation, sandbox) -> (answer | None, ExecutionResult | None)

What a run is held to. "Root" is the caller running as root with namespaces available (CI,
containers: `isolation == "namespaces+uid"`); the fallback is everything else
(`isolation == "audit-hook"`). A run ends when its program's main process exits: whatever it left
running is killed.

threat             | root: blocked by                                   | fallback
-------------------+----------------------------------------------------+-------------------------------------------
network            | new network namespace (a down loopback only)       | audit hook refuses connect, bind, send,
                   |                                                    | getaddrinfo (best effort)

files left on the  | private mount namespace; every mount of the        | none: the program writes wherever the
machine            | machine remounted read-only                        | caller's user may

world-writable     | found at run time (all within 4 levels of / and    | none
directories        | every mount point's root); each covered by a fresh |
                   | directory of the run's tmpfs (an mqueue mount by a |
                   | fresh mqueue); deeper ones are read-only;          |
                   | `result.private_dirs` lists them                   |

SysV IPC, POSIX    | new IPC namespace: gone with the run               | none
queues             |                                                    |

disk               | one tmpfs of `disk_mb` holds all a run can write   | RLIMIT_FSIZE per file only; the total is
                   | (its directory, /tmp, every world-writable         | bounded by time
                   | directory); full -> limit_hit "disk"; RLIMIT_FSIZE |
                   | `file_size_mb` per file                            |

memory             | the run's own cgroup: memory.max `memory_mb` over  | RLIMIT_AS per process only: N processes
                   | all its processes (swap 0, its tmpfs counts) ->    | may hold N x `memory_mb`; result.cgroup is
                   | "memory" on an OOM kill; and RLIMIT_AS `memory_mb` | None, cgroup_fallback says why
                   | per process                                        |

processes, threads | the run's cgroup: pids.max `processes` ->          | RLIMIT_NPROC `processes` of the slot's uid
                   | "processes"                                        | (root without a cgroup) or of the caller's
                   |                                                    | uid (not root: the caller's own processes
                   |                                                    | count too)

CPU                | RLIMIT_CPU `cpu_seconds` per process; the wall     | same
                   | limit bounds a run of many processes               |

wall time, output  | the caller kills the run at `wall_seconds`, stops  | same
                   | reading at `output_bytes`                          |

the caller (files, | an unprivileged uid per slot (claimed machine-     | empty environment; audit hook refuses
environment,       | wide), no_new_privs, empty environment, private    | signals to others and ctypes; runs as the
signals)           | /tmp                                               | caller's user

leftover processes | when the main process exits, every process of the  | the session's process group is killed; a
                   | slot's uid is killed (kill(-1) as that uid) and    | program that leaves its session survives
                   | reaped; the cgroup is killed                       |

The cgroup: v2 (`<cgroup2 mount>/deepseekmath-sandbox/uid-<uid>-...`, memory.max, pids.max) where
the kernel offers memory and pids there and the caller may enable them; else cgroup v1 memory and
pids hierarchies (under the caller's own cgroup); else none. `SandboxLimits.use_cgroup=False`
forces the fallback. Not covered anywhere: the program sees the machine's processes in /proc (no
PID namespace), kernel keyrings of the slot's uid outlive a run, and the CPU time of a run with
many processes is bounded only by the wall limit.
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
