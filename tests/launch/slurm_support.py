"""Shared by the Slurm launch tests: the scripts' folder and the knobs a test environment clears."""

from __future__ import annotations

from tests.support import REPO_ROOT

SLURM_DIR = REPO_ROOT / "launch" / "slurm"

# Environment knobs of launch/slurm (common.sh, submit.sh): a test sets only the ones it means.
KNOBS = (
    "NODES",
    "TASKS_PER_NODE",
    "GPUS_PER_NODE",
    "CPUS_PER_TASK",
    "TIME_LIMIT",
    "PARTITION",
    "ACCOUNT",
    "QOS",
    "JOB_NAME",
    "PREEMPT_SIGNAL",
    "PREEMPT_WARNING_SECONDS",
    "LOG_ROOT",
    "OUTPUT_DIR",
    "LAUNCHER",
    "EXTRA_SBATCH_ARGS",
    "CHECK_DATA",
    "RDZV_PORT",
    "VENV",
    "SETUP_SCRIPT",
    "PYTHON",
    "MAX_REQUEUES",
    "DEEPSEEKMATH_REPO",
    "SLURM_JOB_ID",
)
