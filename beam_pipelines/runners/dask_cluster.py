"""A dask.distributed cluster on this machine: one scheduler and N worker processes, each its own
`dask` command, started and stopped by PID (tests, benchmarks, trying `beam=dask` on a laptop).

    python -m beam_pipelines.runners.dask_cluster --workers 2 --memory-limit 4GB --directory /tmp/dask
    # prints the scheduler file and address; Ctrl-C (or SIGTERM) stops every process

On a Slurm allocation use launch/slurm/beam_dask.sbatch instead (one worker per task, srun).
Listens on 127.0.0.1 only unless `host` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from beam_pipelines.runners.dask import close_cluster_client, cluster_client

log = logging.getLogger(__name__)


def _dask_command() -> list[str]:
    # The `dask` console script of this interpreter's environment (works inside a venv without PATH).
    return [sys.executable, "-m", "dask"]


@dataclass
class LocalDaskCluster:
    directory: Path
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GB"
    host: str = "127.0.0.1"
    # Each worker under a nanny, which restarts it when it dies or outgrows its memory limit.
    nanny: bool = True
    scheduler: subprocess.Popen | None = None
    worker_processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def scheduler_file(self) -> Path:
        return self.directory / "scheduler.json"

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def _log(self, name: str):
        return open(self.directory / f"{name}.log", "ab")

    def start(self, timeout: float = 120.0) -> LocalDaskCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scheduler_file.unlink(missing_ok=True)
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        self.scheduler = subprocess.Popen(
            [
                *_dask_command(),
                "scheduler",
                "--host",
                self.host,
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            stdout=self._log("scheduler"),
            stderr=subprocess.STDOUT,
            env=environment,
        )
        deadline = time.monotonic() + timeout
        while not self.scheduler_file.exists():
            self._check_alive(self.scheduler, "scheduler", deadline)
            time.sleep(0.1)
        for index in range(self.workers):
            self.add_worker(index, environment)
        self.wait_for_workers(self.workers, deadline)
        log.info("dask cluster: scheduler %s, %d worker(s)", self.address, self.workers)
        return self

    def add_worker(self, index: int | None = None, environment: dict | None = None) -> subprocess.Popen:
        index = len(self.worker_processes) if index is None else index
        process = subprocess.Popen(
            [
                *_dask_command(),
                "worker",
                "--scheduler-file",
                str(self.scheduler_file),
                "--host",
                self.host,
                "--nworkers",
                "1",
                "--nthreads",
                str(self.threads_per_worker),
                "--memory-limit",
                self.memory_limit,
                "--dashboard-address",
                ":0",
                "--local-directory",
                str(self.directory / f"worker-{index}"),
                "--name",
                f"worker-{index}",
                "--nanny" if self.nanny else "--no-nanny",
            ],
            stdout=self._log(f"worker-{index}"),
            stderr=subprocess.STDOUT,
            env=environment or dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.worker_processes.append(process)
        return process

    def _check_alive(self, process: subprocess.Popen, name: str, deadline: float) -> None:
        if process.poll() is not None:
            raise RuntimeError(f"dask {name} exited with {process.returncode}; see {self.directory}/{name}.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dask {name} did not start in time; see {self.directory}")

    def wait_for_workers(self, count: int, deadline: float) -> None:
        client = cluster_client(scheduler_file=str(self.scheduler_file))
        while len(client.nthreads()) < count:
            for index, process in enumerate(self.worker_processes):
                self._check_alive(process, f"worker-{index}", deadline)
            time.sleep(0.2)

    def stop(self) -> None:
        close_cluster_client(scheduler_file=str(self.scheduler_file))
        processes = [*self.worker_processes, *([self.scheduler] if self.scheduler else [])]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def processes(self) -> list[subprocess.Popen]:
        return [*([self.scheduler] if self.scheduler else []), *self.worker_processes]

    def __enter__(self) -> LocalDaskCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ClusterSampler:
    """Samples a local cluster's processes every `interval` seconds (benchmarks): the peak RSS of
    each worker process (what its memory limit bounds), how many worker processes each nanny
    has run (more than one: a worker died or outgrew its limit and was restarted), and the CPU
    seconds of every process of the cluster from the first sample on."""

    def __init__(self, cluster: LocalDaskCluster, interval: float = 0.2):
        self.cluster = cluster
        self.interval = interval
        self.peak_worker_rss: dict[int, int] = {}
        self.worker_pids: dict[int, set[int]] = {}
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ClusterSampler:
        self._sample()
        self._thread.start()
        return self

    def _cpu(self, process) -> None:
        times = process.cpu_times()
        seconds = times.user + times.system
        self._cpu_start.setdefault(process.pid, seconds)
        self._cpu_last[process.pid] = seconds

    def _sample(self) -> None:
        for root in self.cluster.processes():
            try:
                parent = psutil.Process(root.pid)
                self._cpu(parent)
                descendants = parent.children(recursive=True)
                # Under a nanny the worker is the nanny's direct child (beside multiprocessing's
                # resource tracker); without one, the root.
                if root is self.cluster.scheduler:
                    workers = []
                elif self.cluster.nanny:
                    workers = [c for c in parent.children() if "resource_tracker" not in " ".join(c.cmdline())]
                else:
                    workers = [parent]
            except psutil.NoSuchProcess:
                continue
            for process in descendants:
                try:
                    self._cpu(process)
                except psutil.NoSuchProcess:
                    continue
            for worker in workers:
                try:
                    rss = worker.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peak_worker_rss[root.pid] = max(self.peak_worker_rss.get(root.pid, 0), rss)
                self.worker_pids.setdefault(root.pid, set()).add(worker.pid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {
            "cpu_seconds": round(sum(self._cpu_last[pid] - self._cpu_start[pid] for pid in self._cpu_last), 1),
            "peak_rss_mb_per_worker": [round(rss / 2**20, 1) for rss in self.peak_worker_rss.values()],
            "worker_restarts": sum(max(0, len(pids) - 1) for pids in self.worker_pids.values()),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--directory", default="outputs/dask-cluster")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cluster = LocalDaskCluster(
        Path(args.directory).resolve(), args.workers, args.threads_per_worker, args.memory_limit, args.host
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with cluster:
        print(json.dumps({"scheduler_file": str(cluster.scheduler_file), "address": cluster.address}), flush=True)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
