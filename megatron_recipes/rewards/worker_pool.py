"""A persistent pool of worker processes that run symbolic checks under a hard per-task deadline.

Why processes and not SIGALRM: a signal-based timeout only works in the main thread of the main
interpreter, and sympy can spend minutes inside C-level big-integer arithmetic that no Python-level
check interrupts. A worker that misses its deadline is killed (SIGKILL) and replaced, so a
deadline holds from any thread of any process, and the caller never waits longer than
`task_timeout_s` (plus pipe latency) for one check.

Workers are started with `python -m megatron_recipes.rewards.worker_tasks` (not multiprocessing:
no re-import of the caller's `__main__`, no fork of a threaded caller); that module imports sympy
once and hands its task handler to `serve`, which talks JSON frames over stdin/stdout, caps the
address space (RLIMIT_AS) so a memory blow-up is a MemoryError rather than the machine's OOM
killer, and dies with the parent (PR_SET_PDEATHSIG) or on EOF. This module knows nothing of the
tasks (no import of the checker: no import cycle). The pool is safe to call from many threads at
once; each call checks a worker out.

Cost: one pipe round trip (~0.1 ms) per task on top of the work; a killed worker costs a restart
(~1 s of one core, off the caller's critical path: the replacement starts in the background).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import queue
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

# The module a worker process runs (`python -m`): it imports sympy and calls `serve`.
WORKER_MODULE = "megatron_recipes.rewards.worker_tasks"
_HEADER = struct.Struct("!I")
TIMEOUT = "timeout"
FAILED = "failed"


class WorkerDied(RuntimeError):
    pass


@dataclass
class PoolStats:
    tasks: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {"tasks": self.tasks, "timeouts": self.timeouts, "crashes": self.crashes, "restarts": self.restarts}


def _repository_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class _Worker:
    def __init__(self, memory_limit_mb: int):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_repository_root(), env.get("PYTHONPATH", "")) if p)
        env["MEGATRON_RECIPES_WORKER_MEMORY_MB"] = str(memory_limit_mb)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not os.environ.get("MEGATRON_RECIPES_WORKER_DEBUG") else None,
            env=env,
            close_fds=True,
        )
        self.ready = False
        self.buffer = b""

    def _read_frame(self, deadline: float) -> Any:
        fd = self.process.stdout.fileno()
        while True:
            if len(self.buffer) >= _HEADER.size:
                (length,) = _HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= _HEADER.size + length:
                    payload = self.buffer[_HEADER.size : _HEADER.size + length]
                    self.buffer = self.buffer[_HEADER.size + length :]
                    return json.loads(payload)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerDied("worker closed its pipe")
            self.buffer += chunk

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            message = self._read_frame(time.monotonic() + timeout_s)
            if message != "ready":
                raise WorkerDied(f"unexpected start-up message {message!r}")
            self.ready = True

    def call(self, task: Any, timeout_s: float) -> Any:
        payload = json.dumps(task).encode()
        try:
            self.process.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerDied(str(error)) from None
        return self._read_frame(time.monotonic() + timeout_s)

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class DeadlineWorkerPool:
    """`run(tasks)` -> one result per task: the worker's answer, TIMEOUT, or FAILED.

    Args:
        num_workers: worker processes (started lazily, on first use).
        task_timeout_s: hard wall-clock limit per task; a worker past it is killed and replaced.
        startup_timeout_s: limit for a worker to import sympy and say it is ready.
        memory_limit_mb: address-space cap of each worker.
    """

    def __init__(
        self,
        num_workers: int = 2,
        task_timeout_s: float = 3.0,
        startup_timeout_s: float = 120.0,
        memory_limit_mb: int = 2048,
    ):
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        self.num_workers = num_workers
        self.task_timeout_s = task_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.stats = PoolStats()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._owner_pid = os.getpid()
        self._executor: ThreadPoolExecutor | None = None

    def _spawn(self) -> None:
        worker = _Worker(self.memory_limit_mb)
        with self._lock:
            self._all.add(worker)
        self._idle.put(worker)

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        for _ in range(self.num_workers):
            self._spawn()

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
        if not self._closed:
            self.stats.add(restarts=1)
            self._spawn()

    def run_one(self, task: Any, timeout_s: float | None = None) -> Any:
        self._ensure_started()
        timeout_s = self.task_timeout_s if timeout_s is None else timeout_s
        worker = self._idle.get()
        try:
            worker.wait_ready(self.startup_timeout_s)
        except (TimeoutError, WorkerDied):
            self.stats.add(crashes=1)
            self._retire(worker)
            return FAILED
        self.stats.add(tasks=1)
        try:
            result = worker.call(task, timeout_s)
        except TimeoutError:
            self.stats.add(timeouts=1)
            self._retire(worker)
            return TIMEOUT
        except (WorkerDied, ValueError):
            self.stats.add(crashes=1)
            self._retire(worker)
            return FAILED
        self._idle.put(worker)
        return result

    def run(self, tasks: Sequence[Any], timeout_s: float | None = None) -> list[Any]:
        """Run tasks on all workers at once; results in task order."""
        if len(tasks) <= 1 or self.num_workers == 1:
            return [self.run_one(task, timeout_s) for task in tasks]
        self._ensure_started()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="symbolic-check")
        return list(self._executor.map(lambda task: self.run_one(task, timeout_s), tasks))

    def warm_up(self) -> None:
        """Start the workers and wait until each has imported sympy (benchmarks call this)."""
        self._ensure_started()
        workers = [self._idle.get() for _ in range(self.num_workers)]
        for worker in workers:
            worker.wait_ready(self.startup_timeout_s)
            self._idle.put(worker)

    def close(self) -> None:
        self._closed = True
        if os.getpid() != self._owner_pid:
            return
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def __enter__(self) -> "DeadlineWorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def owner_pid(self) -> int:
        return self._owner_pid


# ------------------------------------------------------------------------------------------
# The worker side
# ------------------------------------------------------------------------------------------


def _limit_worker() -> None:
    try:
        limit = int(os.environ.get("MEGATRON_RECIPES_WORKER_MEMORY_MB", "2048")) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    try:  # die with the parent even if it is SIGKILLed
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def serve(handle_task: Callable[[Any], Any]) -> None:
    """The worker's loop: read a task frame, answer with handle_task's result (an exception is a
    failed check, not a dead worker), until the pipe closes."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything sympy prints must not corrupt the protocol stream
    protocol_in = sys.stdin.buffer
    _limit_worker()

    def send(message: Any) -> None:
        payload = json.dumps(message).encode()
        protocol_out.write(_HEADER.pack(len(payload)) + payload)
        protocol_out.flush()

    send("ready")
    while True:
        header = protocol_in.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (length,) = _HEADER.unpack(header)
        task = json.loads(protocol_in.read(length))
        try:
            result = handle_task(task)
        except (MemoryError, RecursionError):
            result = FAILED
        except Exception as error:  # a bug or a sympy internal error is a failed check, not a dead worker
            result = {"error": f"{type(error).__name__}: {error}"[:300]}
        send(result)


_DEFAULT_POOL: DeadlineWorkerPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool(num_workers: int | None = None, task_timeout_s: float | None = None) -> DeadlineWorkerPool:
    """The process-wide pool (created on first use; a forked child gets its own)."""
    global _DEFAULT_POOL
    with _DEFAULT_LOCK:
        if _DEFAULT_POOL is None or _DEFAULT_POOL.owner_pid != os.getpid() or _DEFAULT_POOL._closed:
            workers = num_workers or max(1, min(4, os.cpu_count() or 1))
            _DEFAULT_POOL = DeadlineWorkerPool(num_workers=workers, task_timeout_s=task_timeout_s or 3.0)
        return _DEFAULT_POOL


@atexit.register
def _close_default_pool() -> None:
    if _DEFAULT_POOL is not None:
        _DEFAULT_POOL.close()
