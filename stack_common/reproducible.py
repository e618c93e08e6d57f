"""The environment that makes a CPU training run the same model, bit for bit, on any x86-64 machine.

A seeded run is already deterministic on one machine (same data order, same initial weights, one
reduction order per kernel). Across machines it is not: torch picks its vectorised kernels by the
instruction set it finds (AVX-512 on one machine, AVX2 on another: sums and softmaxes reduce in
another order) and MKL picks its GEMM code path by processor, so the same seeded SFT run of the
tiny model gave different weights on an AVX-512 machine and an AVX2 one (the post-training tests'
SFT fixture: final loss 0.1104 vs 0.1077). Where a model sits on a knife edge (greedy decoding of
two answer styles the data mixes half and half), those last bits decide its outcome: the fixture's
greedy accuracy was 0.156 on one machine and 0.844 on the other.

These variables pin every choice that depends on the machine: the kernel level torch dispatches
to (AVX2, which every x86-64 machine of the last decade has), MKL's conditional numerical
reproducibility branch (its AVX2 path, on Intel and AMD alike), oneDNN's instruction set, and one
thread per process (a thread count changes how reductions are split). Each must be in the
environment before torch is imported: subprocesses get them through `reproducible_cpu_environment`,
and the test suite sets them in tests/conftest.py (its subprocesses inherit them). They cost speed
on AVX-512 machines (about 8% for the tiny model's SFT), so the recipes do not set them themselves.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

REPRODUCIBLE_CPU_VARIABLES = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def reproducible_cpu_environment(repo_root: str | Path | None = None, base: dict[str, str] | None = None) -> dict:
    """A copy of `base` (default: os.environ) with REPRODUCIBLE_CPU_VARIABLES set and, when given,
    `repo_root` first on PYTHONPATH (so `python -m` subprocesses import that checkout)."""
    environment = dict(os.environ if base is None else base)
    environment.update(REPRODUCIBLE_CPU_VARIABLES)
    if repo_root is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(repo_root), environment.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    return environment


def run_logged_reproducibly(command: list[str], repo_root: str | Path, log_path: Path) -> None:
    """Run `command` in `repo_root` with the reproducible CPU environment, its output (after the
    command line) in `log_path`; exit with one line naming the command and the log if it fails."""
    with open(log_path, "w", encoding="utf-8") as handle:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        result = subprocess.run(
            command,
            cwd=repo_root,
            env=reproducible_cpu_environment(repo_root),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise SystemExit(f"error: {shlex.join(command[:3])} failed (exit {result.returncode}); log: {log_path}")
