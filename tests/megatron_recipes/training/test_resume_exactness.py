"""Resume exactness and graceful stop, with the real entry point under torchrun (2 processes).

Run A trains 12 steps uninterrupted. Run B is the same command: SIGKILLed (whole process group)
a few steps after a checkpoint, restarted, stopped with SIGUSR1 sent to its workers (Slurm
preemption), restarted again to the end. Every step of B, after the resumes, must have exactly
A's loss: model, distributed optimizer (sharded over DP=2), lr schedule, RNG (dropout is on)
and data position (a DataLoader worker prefetching) all come back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from megatron_recipes.training.checkpointing import latest_iteration
from megatron_recipes.training.metrics import read_metrics
from tests.support import REPO_ROOT, metric_row_steps, subprocess_env

STEPS = 12
OVERRIDES = [
    "model=tiny",
    "model.vocab_size=512",
    "model.hidden_dropout=0.1",
    "model.attention_dropout=0.1",
    "data=mock",
    "data.seq_length=64",
    "data.num_workers=1",
    "trainer=cpu",
    f"trainer.train_steps={STEPS}",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=2",
    "trainer.tensorboard=false",
    "optimizer=adamw_cosine",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=2",
    "parallelism.use_distributed_optimizer=true",
    "checkpoint.save_interval=3",
]


# torchrun forwards these to its workers (SIGUSR1 is not among its defaults) and waits this long
# for them to checkpoint and exit: what a Slurm job script launching torchrun must pass.
TORCHRUN_SIGNALS = ["--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout", "120"]


def start(output_dir: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *TORCHRUN_SIGNALS,
        "-m",
        "megatron_recipes.pretrain",
        *OVERRIDES,
        f"trainer.output_dir={output_dir}",
    ]
    log = open(output_dir.parent / f"{output_dir.name}.log", "a")
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def last_step(output_dir: Path) -> int:
    return max(metric_row_steps(output_dir / "metrics.jsonl"), default=0)


def wait_for_step(process: subprocess.Popen, output_dir: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while last_step(output_dir) < step:
        assert process.poll() is None, f"run ended (status {process.returncode}) before step {step}"
        assert time.monotonic() < deadline, f"no step {step} within {timeout} s"
        time.sleep(0.02)


def launched_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    """torchrun and every process below it (training workers, their DataLoader workers): what
    Slurm signals on preemption."""
    return [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]


@pytest.mark.integration
def test_killed_and_preempted_run_resumes_with_exactly_the_uninterrupted_losses(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    run_a = start(uninterrupted)
    assert run_a.wait(timeout=600) == 0, (tmp_path / "uninterrupted.log").read_text()[-3000:]
    expected = read_metrics(uninterrupted / "metrics.jsonl")
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    checkpoints = interrupted / "checkpoints"

    # 1. SIGKILL the whole run (launcher and workers) after step 4, i.e. after the step-3 save.
    #    torchrun starts each worker in its own session: kill the process tree, not the group.
    run_b = start(interrupted)
    wait_for_step(run_b, interrupted, 4)
    tree = [psutil.Process(run_b.pid), *psutil.Process(run_b.pid).children(recursive=True)]
    for process in tree:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=60)
    run_b.wait(timeout=60)
    killed_after = last_step(interrupted)
    resumed_from = latest_iteration(checkpoints)
    assert resumed_from is not None and resumed_from % 3 == 0 and resumed_from < killed_after, (
        resumed_from,
        killed_after,
    )

    # 2. Restart: it resumes from `latest`; then preempt it with SIGUSR1 to every process of the
    #    run (torchrun, training workers and DataLoader workers alike, as Slurm does).
    rows_before_restart = len(metric_row_steps(interrupted / "metrics.jsonl"))
    run_c = start(interrupted)
    wait_for_step(run_c, interrupted, resumed_from + 2)
    processes = launched_processes(run_c)
    assert len(processes) >= 5  # torchrun, 2 training workers and their DataLoader workers
    for process in processes:
        process.send_signal(signal.SIGUSR1)
    assert run_c.wait(timeout=300) != 0  # torchrun exits non-zero on a signal; exit_status.json says why
    status = json.loads((checkpoints / "exit_status.json").read_text())
    assert status["reason"] == "signal" and status["signal"] == "SIGUSR1" and status["exit_code"] == 75
    stopped_at = status["iteration"]
    assert latest_iteration(checkpoints) == stopped_at and stopped_at < STEPS
    # The restarted run's first step is the one after the checkpoint it resumed from.
    assert metric_row_steps(interrupted / "metrics.jsonl")[rows_before_restart] == resumed_from + 1

    # 3. Restart to the end.
    run_d = start(interrupted)
    assert run_d.wait(timeout=600) == 0, (tmp_path / "interrupted.log").read_text()[-3000:]
    assert json.loads((checkpoints / "exit_status.json").read_text())["reason"] == "finished"
    assert latest_iteration(checkpoints) == STEPS
    assert not list(checkpoints.glob("*.incomplete")) or resumed_from < killed_after

    resumed = read_metrics(interrupted / "metrics.jsonl")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step]["loss"] == expected[step]["loss"], (step, resumed[step]["loss"], expected[step]["loss"])
        assert resumed[step]["grad_norm"] == expected[step]["grad_norm"], step
        assert resumed[step]["lr"] == expected[step]["lr"], step
