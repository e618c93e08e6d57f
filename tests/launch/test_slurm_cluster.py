"""The pretrain sbatch script on a real one-node Slurm cluster (launch/slurm/local_cluster.sh:
munged, slurmctld and slurmd on this host, as root), with a tiny CPU model on 2 gloo ranks:

1. a run to the end through submit.sh with the torchrun launcher: per-rank logs, checkpoints;
2. a run preempted twice with SIGUSR1 through the srun launcher, once to the job's steps (what
   `--signal=USR1@N` sends), once to the batch shell only (`--signal=B:USR1@N`): each time the
   trainer checkpoints, the job requeues itself, and the next attempt resumes from that
   checkpoint rather than from step 0;
3. a job submitted with plain sbatch and a bad override: it fails in its batch step with one line
   before any rank starts.

CI runs as root with slurm-wlm and munge installed (.ci/run), where this must run: it skips only
where it cannot (not root, or the packages missing), and fails instead when $CI is set.
The cluster is torn down after the module, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_recipes.training.checkpointing import latest_iteration, read_checkpoint_info
from megatron_recipes.training.metrics import read_metrics
from tests.launch.slurm_support import KNOBS, SLURM_DIR
from tests.support import subprocess_env

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}
TINY_RUN = [
    "model=tiny",
    "model.vocab_size=256",
    "data=mock",
    "data.seq_length=32",
    "trainer=cpu",
    "trainer.global_batch_size=4",
    "trainer.micro_batch_size=2",
    "trainer.tensorboard=false",
    "optimizer.warmup_steps=1",
]


def cannot_run_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: launch/slurm/local_cluster.sh runs slurmd and munged as root"
    missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install -y slurm-wlm munge)"
    return None


@dataclass
class Cluster:
    state_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = subprocess_env()
        for name in KNOBS:
            env.pop(name, None)
        env.update(SLURM_CONF=str(self.state_dir / "slurm.conf"), VENV=sys.prefix, OMP_NUM_THREADS="1", **extra)
        return env

    def run(self, *command: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env(**extra), capture_output=True, text=True, timeout=60)

    def job(self, job_id: str) -> dict[str, str]:
        shown = self.run("scontrol", "show", "job", "-o", job_id)
        assert shown.returncode == 0, shown.stderr
        return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))

    def wait(self, job_id: str, logs: Path, timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["JobState"] in TERMINAL_STATES:
                return job
            assert time.monotonic() < deadline, (
                f"job {job_id} still {job['JobState']} after {timeout} s\n{read_logs(logs)}"
            )
            time.sleep(0.5)


def read_logs(root: Path) -> str:
    """Every log under root, for assertion messages."""
    return "\n".join(f"--- {path}\n{path.read_text()[-4000:]}" for path in sorted(root.rglob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = cannot_run_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm tests must run in CI: {reason}")
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("slurm")
    local = Cluster(state_dir)
    try:
        started = subprocess.run(
            ["bash", str(SLURM_DIR / "local_cluster.sh"), "start", str(state_dir), str(os.cpu_count())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, f"local cluster did not start:\n{started.stdout}{started.stderr}"
        yield local
    finally:
        # Jobs first (their ranks are processes on this host), then the daemons.
        queued = local.run("squeue", "-h", "-o", "%i") if (state_dir / "slurm.conf").exists() else None
        if queued is not None and queued.returncode == 0 and queued.stdout.split():
            local.run("scancel", *queued.stdout.split())
            deadline = time.monotonic() + 60
            while local.run("squeue", "-h", "-o", "%i").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        subprocess.run(
            ["bash", str(SLURM_DIR / "local_cluster.sh"), "stop", str(state_dir)], capture_output=True, timeout=60
        )


def submit(cluster: Cluster, workdir: Path, *overrides: str, **knobs: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["bash", str(SLURM_DIR / "submit.sh"), "pretrain", *overrides],
        cwd=workdir,
        env=cluster.env(GPUS_PER_NODE="0", TASKS_PER_NODE="2", CPUS_PER_TASK="1", TIME_LIMIT="15", **knobs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"^submitted job (\d+);", result.stdout, re.MULTILINE).group(1)


def attempt_headers(log: Path) -> list[str]:
    return re.findall(r"^=== \S+ \S+ rank \d+, job \d+ attempt (\d+) ===$", log.read_text(), re.MULTILINE)


def test_pretrain_job_runs_to_the_end_with_rank_logs_and_checkpoints(cluster, tmp_path):
    output = tmp_path / "run"
    job_id = submit(
        cluster,
        tmp_path,
        *TINY_RUN,
        "trainer.train_steps=6",
        "checkpoint.save_interval=3",
        LAUNCHER="torchrun",
        JOB_NAME="tiny",
        OUTPUT_DIR=str(output),
    )
    job = cluster.wait(job_id, tmp_path / "logs")
    logs = read_logs(tmp_path / "logs")
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "0"), logs

    rank_dir = tmp_path / "logs" / f"tiny-{job_id}"
    assert sorted(path.name for path in rank_dir.glob("rank-*.log")) == ["rank-0.log", "rank-1.log"]
    for rank in (0, 1):
        assert attempt_headers(rank_dir / f"rank-{rank}.log") == ["0"], logs
    # The composed config of the job is kept beside its logs.
    assert "trainer.train_steps=6" in (rank_dir / "hydra" / ".hydra" / "overrides.yaml").read_text()

    checkpoints = output / "checkpoints"
    assert latest_iteration(checkpoints) == 6
    assert (checkpoints / "iter_0000003").is_dir() and (checkpoints / "iter_0000006").is_dir()
    layout = read_checkpoint_info(checkpoints)["layout"]  # the two ranks trained data-parallel
    assert (layout["tensor_parallel"], layout["pipeline_parallel"], layout["data_parallel"]) == (1, 1, 2)
    status = json.loads((checkpoints / "exit_status.json").read_text())
    assert (status["reason"], status["iteration"], status["exit_code"]) == ("finished", 6, 0)
    assert sorted(read_metrics(output / "metrics.jsonl")) == list(range(1, 7))


def wait_for_step_after(
    cluster: Cluster, job_id: str, metrics: Path, after: int, logs: Path, timeout: float = 240
) -> None:
    """Until the running job has recorded a step beyond `after` (its current attempt is training)."""
    deadline = time.monotonic() + timeout
    while max(recorded_steps(metrics), default=0) <= after:
        job = cluster.job(job_id)
        # COMPLETING: a requeued job shows it while slurmd still cleans up the last attempt's
        # allocation (seen in CI right after Restarts turned 1); an ended job is caught next poll.
        assert job["JobState"] in {"PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "COMPLETING"}, (
            f"{job['JobState']}\n{read_logs(logs)}"
        )
        assert time.monotonic() < deadline, read_logs(logs)
        time.sleep(0.1)


def recorded_steps(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]


def test_preempted_job_requeues_itself_and_resumes_from_its_checkpoint(cluster, tmp_path):
    steps = 60
    output = tmp_path / "run"
    checkpoints = output / "checkpoints"
    logs = tmp_path / "logs"
    metrics = output / "metrics.jsonl"
    # No periodic checkpoint: the only ones before the end are those the signals make.
    job_id = submit(
        cluster,
        tmp_path,
        *TINY_RUN,
        f"trainer.train_steps={steps}",
        "checkpoint.save_interval=1000",
        JOB_NAME="preempt",
        OUTPUT_DIR=str(output),
    )

    # 1. What `#SBATCH --signal=USR1@N` does near the time limit: SIGUSR1 to every process of
    #    the job's steps, not to the batch shell.
    wait_for_step_after(cluster, job_id, metrics, 0, logs)
    assert cluster.run("scancel", "--signal=USR1", job_id).returncode == 0
    # 2. The next attempt, once training: what `--signal=B:USR1@N` does, SIGUSR1 to the batch
    #    shell only, which must survive it and pass it on to the ranks.
    deadline = time.monotonic() + 120
    while cluster.job(job_id)["Restarts"] != "1":  # the first attempt has ended and requeued
        assert time.monotonic() < deadline, read_logs(logs)
        time.sleep(0.2)
    wait_for_step_after(cluster, job_id, metrics, max(recorded_steps(metrics)), logs)
    assert cluster.run("scancel", "--batch", "--signal=USR1", job_id).returncode == 0

    job = cluster.wait(job_id, logs)
    text = read_logs(logs)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "2"), text

    for rank in (0, 1):
        assert attempt_headers(logs / f"preempt-{job_id}" / f"rank-{rank}.log") == ["0", "1", "2"], text
    # No periodic checkpoint: the two before the end are those each signalled attempt wrote.
    stopped_at = sorted(int(path.name.removeprefix("iter_")) for path in checkpoints.glob("iter_*"))[:-1]
    assert len(stopped_at) == 2 and 1 <= stopped_at[0] < stopped_at[1] < steps, stopped_at
    # Every step exactly once, in order: each attempt went on from the checkpoint the previous
    # one wrote when signalled (metrics.jsonl is appended to), none from step 0.
    recorded = recorded_steps(metrics)
    assert recorded == list(range(1, steps + 1)), recorded
    status = json.loads((checkpoints / "exit_status.json").read_text())
    assert (status["reason"], status["iteration"]) == ("finished", steps)
    assert latest_iteration(checkpoints) == steps


def test_a_bad_override_fails_the_batch_step_before_any_rank_starts(cluster, tmp_path):
    # Plain sbatch, from outside the checkout: the script finds it from the submitted path.
    submitted = cluster.run(
        "sbatch",
        "--parsable",
        "--gpus-per-node=0",
        "--ntasks-per-node=1",
        "--cpus-per-task=1",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/bad-%j.log",
        str(SLURM_DIR / "pretrain.sbatch"),
        *TINY_RUN,
        "trainer.train_stepz=3",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    job = cluster.wait(job_id, tmp_path)
    batch_log = (tmp_path / f"bad-{job_id}.log").read_text()
    assert (job["JobState"], job["ExitCode"]) == ("FAILED", "2:0"), batch_log
    assert batch_log.splitlines() == [
        "error: Could not override 'trainer.train_stepz'. To append to your config use +trainer.train_stepz=3"
    ]
    assert not (tmp_path / "logs").exists()
