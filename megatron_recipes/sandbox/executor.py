"""Run model-written Python in an isolated process and report what happened.

`run_python(code, limits)` -> `ExecutionResult(stdout, stderr, exit_code, limit_hit, ...)`;
`SandboxPool(max_workers, limits)` runs many programs at once (`run`, `map`), each in its own slot.

What isolates a program (see `launcher.py` for the order of the steps):
  - a separate process in its own session, started through a standalone launcher script;
  - limits: CPU seconds (RLIMIT_CPU), wall seconds (the caller kills the group), address space
    (RLIMIT_AS), processes (RLIMIT_NPROC, counted per slot uid), file size (RLIMIT_FSIZE), output
    bytes (the caller stops reading and kills), open files;
  - a fresh temporary working directory, deleted afterwards;
  - an environment with none of the caller's variables;
  - as root (CI, containers): no network (a new network namespace), private tmpfs over /tmp,
    /var/tmp, /dev/shm (a new mount namespace), and an unprivileged uid per pool slot
    (`uid_base + slot`, or the next free one), so it cannot write outside its directory, read the
    caller's private files, or signal the caller; after each run every process of that uid is
    killed (a fork bomb that escaped the session is swept too). A uid is claimed machine-wide
    with a lock file for the whole run, so pools in separate processes (two evaluation jobs on
    one node) never share a uid and never sweep each other's programs;
  - not root: the same limits, plus a Python audit hook refusing sockets, signals to other
    processes and ctypes (best effort: a determined program can get around an audit hook;
    `ExecutionResult.isolation` says which mode ran).

Cost: one process start (~40-80 ms with Python's start-up) per program plus its own run time;
memory bounded by `limits.memory_mb` per process and `limits.processes` processes per slot.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

LAUNCHER = str(Path(__file__).resolve().with_name("launcher.py"))

LIMIT_WALL_TIME = "wall_time"
LIMIT_CPU_TIME = "cpu_time"
LIMIT_MEMORY = "memory"
LIMIT_OUTPUT = "output"
LIMIT_FILE_SIZE = "file_size"
LIMIT_PROCESSES = "processes"
LIMIT_DISK = "disk"


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits (mirrors `config.SandboxConfig`)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_mb: int = 1024
    processes: int = 16
    file_size_mb: int = 16
    output_bytes: int = 1 << 20
    open_files: int = 64
    # One tmpfs of this size holds everything a run may write (its directory, /tmp and every
    # other world-writable directory); with a cgroup its pages also count against memory_mb.
    disk_mb: int = 128
    # Bound the whole run's memory and tasks with its own cgroup where the kernel offers one
    # (False forces the per-process fallback).
    use_cgroup: bool = True
    # Pool slots run as uid_base + slot when the caller is root (the next free uid in
    # [uid_base, uid_base + uid_count) when another process holds that one).
    uid_base: int = 61000
    uid_count: int = 1024

    def validate(self) -> None:
        for name in (
            "wall_seconds",
            "cpu_seconds",
            "memory_mb",
            "processes",
            "file_size_mb",
            "output_bytes",
            "open_files",
            "disk_mb",
            "uid_count",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox.{name} must be positive")


@dataclass
class ExecutionResult:
    stdout: str
    stderr: str
    exit_code: int | None  # negative: killed by that signal
    limit_hit: str | None  # one of the LIMIT_* names, or None
    wall_seconds: float
    isolation: str  # "namespaces+uid" (root), "audit-hook" (fallback) or "failed" (set-up failed, not run)
    output_truncated: bool = False
    cgroup: str | None = None
    cgroup_fallback: str | None = None
    cgroup_events: dict = field(default_factory=dict)
    private_dirs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_hit is None

    def as_dict(self) -> dict:
        return asdict(self)


def _interpreter_paths() -> list[str]:
    """What the sandboxed interpreter must reach: its binary, its prefix and the venv's."""
    paths = {os.path.realpath(sys.executable), sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix}
    return sorted({os.path.realpath(p) for p in paths} | paths)


def live_processes_of(uid: int) -> list[int]:
    """Pids running as uid, zombies excluded (a killed orphan stays a zombie until init reaps it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process running as uid (repeat: a fork bomb forks while we kill)."""
    for _ in range(50):
        pids = live_processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        time.sleep(0.02)


def _classify(exit_code: int | None, stderr: str, cpu_limit_hit: bool) -> str | None:
    if exit_code is None:
        return None
    if exit_code in (-signal.SIGXCPU,) or cpu_limit_hit:
        return LIMIT_CPU_TIME
    if exit_code == -signal.SIGXFSZ or "File too large" in stderr:
        return LIMIT_FILE_SIZE
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return LIMIT_MEMORY
    if "Resource temporarily unavailable" in stderr and ("fork" in stderr or "Thread" in stderr or "start" in stderr):
        return LIMIT_PROCESSES
    return None


def run_python(
    code: str, limits: SandboxLimits | None = None, slot: int = 0, use_namespaces: bool = True
) -> ExecutionResult:
    """Run `code` as a Python program in a fresh sandbox; never raises for anything the program does.

    Args:
        code: the program text (written to main.py in a fresh directory).
        limits: SandboxLimits; defaults when None.
        slot: the pool slot (selects the unprivileged uid when root); concurrent runs need
            distinct slots (SandboxPool does that).
        use_namespaces: as root, isolate network and /tmp with namespaces and run as the slot's
            uid (default True). False gives the non-root behaviour (limits + audit hook), which
            is weaker: it exists for machines without root and to test that fallback.
    """
    limits = limits or SandboxLimits()
    is_root = os.geteuid() == 0
    uid, uid_lock = _claim_uid(limits, slot) if is_root else (limits.uid_base + slot, None)
    workdir = None
    try:
        workdir = tempfile.mkdtemp(prefix="sandbox-")
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        config = {
            "workdir": workdir,
            "python": sys.executable,
            "uid": uid,
            "use_namespaces": use_namespaces,
            "cpu_seconds": int(limits.cpu_seconds),
            "memory_bytes": int(limits.memory_mb) << 20,
            "file_size_bytes": int(limits.file_size_mb) << 20,
            "open_files": int(limits.open_files),
            "processes": int(limits.processes),
            "tmpfs_mb": int(limits.disk_mb),
            "expose": _interpreter_paths(),
        }
        if is_root:
            os.chown(workdir, uid, uid)
            os.chown(Path(workdir, "main.py"), uid, uid)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", LAUNCHER, json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            close_fds=True,
            cwd=workdir,
        )
        stdout, stderr, limit_hit, truncated = _collect(process, limits, started)
        exit_code = process.returncode
        wall = time.monotonic() - started
        cpu_limit_hit = False
        stderr_text = stderr.decode("utf-8", "replace")
        if limit_hit is None:
            limit_hit = _classify(exit_code, stderr_text, cpu_limit_hit)
        isolated = is_root and use_namespaces and "namespaces unavailable" not in stderr_text
        isolation = "namespaces+uid" if isolated else "audit-hook"
        if "sandbox: isolation set-up failed" in stderr_text:
            isolation = "failed"  # the launcher refused to run the program; stderr says why
        return ExecutionResult(
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr_text,
            exit_code=exit_code,
            limit_hit=limit_hit,
            wall_seconds=round(wall, 4),
            isolation=isolation,
            output_truncated=truncated,
        )
    finally:
        if is_root:
            _kill_uid(uid)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if uid_lock is not None:
            os.close(uid_lock)  # releases the claim, after the sweep


def _uid_lock_directory() -> Path:
    # /run/lock is the machine's own lock directory (the same for every process, whatever its
    # TMPDIR); /tmp where there is none.
    base = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    directory = base / "deepseekmath-sandbox-uids"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def _claim_uid(limits: SandboxLimits, slot: int) -> tuple[int, int]:
    """Lock a sandbox uid for one run: uid_base + slot if free, else the next free one; when every
    uid of the range is busy, wait for the slot's own. Returns (uid, fd holding the lock)."""
    directory = _uid_lock_directory()
    count = limits.uid_count

    def lock(uid: int, wait: bool) -> int | None:
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    for offset in range(count):
        uid = limits.uid_base + (slot + offset) % count
        fd = lock(uid, wait=False)
        if fd is not None:
            return uid, fd
    uid = limits.uid_base + slot % count
    return uid, lock(uid, wait=True)


def _collect(process: subprocess.Popen, limits: SandboxLimits, started: float):
    """Read stdout/stderr until exit, the wall limit, or the output limit; kill on a limit."""
    buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    open_fds = set(buffers)
    limit_hit = None
    truncated = False
    while open_fds:
        remaining = limits.wall_seconds - (time.monotonic() - started)
        if remaining <= 0:
            limit_hit = LIMIT_WALL_TIME
            break
        readable, _, _ = select.select(list(open_fds), [], [], min(remaining, 0.5))
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.discard(fd)
                continue
            buffers[fd] += chunk
        if sum(len(b) for b in buffers.values()) > limits.output_bytes:
            limit_hit, truncated = LIMIT_OUTPUT, True
            break
    if limit_hit is not None:
        _kill_group(process)
    try:
        process.wait(timeout=max(0.1, limits.wall_seconds - (time.monotonic() - started)) if limit_hit is None else 5)
    except subprocess.TimeoutExpired:
        limit_hit = limit_hit or LIMIT_WALL_TIME
        _kill_group(process)
        process.wait()
    _kill_group(process)  # children left behind in the session
    for stream in (process.stdout, process.stderr):
        stream.close()
    out, err = (bytes(b) for b in buffers.values())
    cap = limits.output_bytes
    return out[:cap], err[:cap], limit_hit, truncated


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            process.kill()
        except OSError:
            pass


class SandboxPool:
    """Concurrent sandboxed runs: `max_workers` slots, each with its own uid when root.

    Thread-safe; `run(code)` blocks for a free slot; `map(codes)` runs them all, results in order.
    """

    def __init__(self, max_workers: int = 2, limits: SandboxLimits | None = None, use_namespaces: bool = True):
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.limits = limits or SandboxLimits()
        self.limits.validate()
        self.use_namespaces = use_namespaces
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(max_workers):
            self._slots.put(slot)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sandbox")
        self.max_workers = max_workers

    def run(self, code: str) -> ExecutionResult:
        slot = self._slots.get()
        try:
            return run_python(code, self.limits, slot=slot, use_namespaces=self.use_namespaces)
        finally:
            self._slots.put(slot)

    def map(self, codes: Sequence[str]) -> list[ExecutionResult]:
        return list(self._executor.map(self.run, codes))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
