"""Run model-written Python in an isolated process and report what happened.

`run_python(code, limits)` -> `ExecutionResult(stdout, stderr, exit_code, limit_hit, ...)`;
`SandboxPool(max_workers, limits)` runs many programs at once (`run`, `map`), each in its own slot.

What isolates a program: the table in the package docstring (`megatron_recipes/sandbox`); the
order of the steps: `launcher.py`; the per-run cgroup: `cgroups.py`. In short: a separate process
(under a supervising launcher) in its own session; per-process limits (RLIMIT_CPU, RLIMIT_AS,
RLIMIT_FSIZE, open files) and the caller's wall and output limits; an empty environment; as root,
namespaces (network, IPC, mounts: the machine read-only, one capped tmpfs for all a run writes),
an unprivileged uid per pool slot and a cgroup per run (memory.max, pids.max) where the kernel
offers one. A uid is claimed machine-wide with a lock file for the whole run, so pools in separate
processes (two evaluation jobs on one node) never share a uid and never sweep each other's
programs. Not root: the same per-process limits, plus a Python audit hook refusing sockets,
signals to other processes and ctypes (best effort; `ExecutionResult.isolation` says which mode
ran, `ExecutionResult.cgroup` whether a cgroup bounded the run).

Cost: one process start (~40-80 ms with Python's start-up) per program plus its own run time, and
as root the launcher's set-up (a scan of about a thousand directories, one remount per mount of
the machine). Memory: `limits.memory_mb` for the whole run with a cgroup, per process without.
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

from megatron_recipes.sandbox.cgroups import RunCgroup, probe_cgroups
from stack_common.checks import require_positive

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
    """Per-program limits; their defaults are the `sandbox` section's (sandbox/config.py)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    # Each process's address space (RLIMIT_AS) and, with a cgroup, the whole run's memory
    # (memory.max: resident memory, page cache and the run's tmpfs, swap 0).
    memory_mb: int = 1024
    # With a cgroup the run's tasks (pids.max: processes and threads); without, RLIMIT_NPROC of the slot's uid.
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
            require_positive(f"sandbox.{name}", getattr(self, name))


@dataclass
class ExecutionResult:
    stdout: str
    stderr: str
    exit_code: int | None  # negative: killed by that signal
    limit_hit: str | None  # one of the LIMIT_* names, or None
    wall_seconds: float
    isolation: str  # "namespaces+uid" (root), "audit-hook" (fallback) or "failed" (set-up failed, not run)
    output_truncated: bool = False
    # "v2" or "v1": the run's own cgroup bounded its total memory and tasks; None: only the
    # per-process limits did (cgroup_fallback says why).
    cgroup: str | None = None
    cgroup_fallback: str | None = None  # why the run is not in a cgroup v2; None when it is
    cgroup_events: dict = field(default_factory=dict)  # {"oom_kill": n, "pids_max": n} with a cgroup
    # The world-writable directories that were private to this run (a tmpfs each, on its disk).
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


def _classify(exit_code: int | None, stderr: str, limits: SandboxLimits, ending: dict, events: dict) -> str | None:
    """Which limit stopped the program, from its exit, the supervisor's report and the cgroup's
    counters (stderr only for what only the program sees: MemoryError, EFBIG, EAGAIN)."""
    if exit_code is None:
        return None
    cpu_killed = exit_code == -signal.SIGKILL and ending.get("cpu_seconds", 0) >= limits.cpu_seconds
    if exit_code == -signal.SIGXCPU or cpu_killed:
        return LIMIT_CPU_TIME
    if events.get("oom_kill") or "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return LIMIT_MEMORY
    if exit_code == -signal.SIGXFSZ or "File too large" in stderr:
        return LIMIT_FILE_SIZE
    if ending.get("disk_full") or "No space left on device" in stderr:
        return LIMIT_DISK
    if events.get("pids_max"):
        return LIMIT_PROCESSES
    if "Resource temporarily unavailable" in stderr and ("fork" in stderr or "Thread" in stderr or "start" in stderr):
        return LIMIT_PROCESSES
    return None


def _run_cgroup(limits: SandboxLimits, uid: int, is_root: bool) -> tuple[RunCgroup | None, str | None]:
    """The run's cgroup, or None and why (the result carries the reason)."""
    per_process = "memory and processes are bounded per process (RLIMIT_AS, RLIMIT_NPROC)"
    if not limits.use_cgroup:
        return None, f"use_cgroup=False: {per_process}"
    if not is_root:
        return None, f"not root: {per_process}"
    support = probe_cgroups()
    if support.version is None:
        return None, f"{support.note}: {per_process}"
    try:
        run = RunCgroup.create(support, f"uid-{uid}-", int(limits.memory_mb) << 20, int(limits.processes))
    except OSError as error:
        return None, f"the run's cgroup could not be made ({error}): {per_process}"
    return run, support.note


class _LauncherReport:
    """The launcher's JSON lines on the report pipe ({"setup": ...} from the program's side before
    it execs, {"exit": ...} from the supervisor); read whenever asked, never blocking."""

    def __init__(self, fd: int):
        self.fd = fd
        self.records: dict = {}
        self._pending = bytearray()
        os.set_blocking(fd, False)

    def read(self) -> dict:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        for line in lines:
            try:
                self.records.update(json.loads(line))
            except ValueError:
                continue
        return self.records


def run_python(
    code: str, limits: SandboxLimits | None = None, slot: int = 0, use_namespaces: bool = True
) -> ExecutionResult:
    """Run `code` as a Python program in a fresh sandbox; never raises for anything the program does.

    Args:
        code: the program text (main.py in the program's working directory).
        limits: SandboxLimits; defaults when None.
        slot: the pool slot (selects the unprivileged uid when root); concurrent runs need
            distinct slots (SandboxPool does that).
        use_namespaces: as root, isolate network, IPC and the file system with namespaces and run
            as the slot's uid (default True). False gives the non-root behaviour (limits + audit
            hook), which is weaker: it exists for machines without root and to test that fallback.
    """
    limits = limits or SandboxLimits()
    is_root = os.geteuid() == 0
    uid, uid_lock = _claim_uid(limits, slot) if is_root else (limits.uid_base + slot, None)
    workdir = report_read = cgroup = None
    try:
        workdir = tempfile.mkdtemp(prefix="sandbox-")
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        cgroup, cgroup_fallback = _run_cgroup(limits, uid, is_root)
        report_read, report_write = os.pipe()
        config = {
            "workdir": workdir,
            "python": sys.executable,
            "uid": uid,
            "use_namespaces": use_namespaces,
            "report_fd": report_write,
            "cpu_seconds": int(limits.cpu_seconds),
            "memory_bytes": int(limits.memory_mb) << 20,
            "file_size_bytes": int(limits.file_size_mb) << 20,
            "open_files": int(limits.open_files),
            "processes": int(limits.processes),
            "disk_bytes": int(limits.disk_mb) << 20,
            "cgroup_procs": cgroup.procs_files if cgroup else [],
            "expose": _interpreter_paths(),
        }
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", LAUNCHER, json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
                close_fds=True,
                pass_fds=(report_write,),
                cwd=workdir,
            )
        finally:
            os.close(report_write)
        report = _LauncherReport(report_read)

        def end_run() -> None:
            """Kill what is left of the run; with namespaces the supervisor reaps and reports."""
            as_slot_uid = report.read().get("setup", {}).get("isolation") == "namespaces+uid"
            if is_root:
                _kill_uid(uid)
            if cgroup is not None:
                cgroup.kill()
            if as_slot_uid:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            _kill_group(process)  # the session's leftovers (fallback), or a hung launcher
            process.wait()

        stdout, stderr, limit_hit, truncated = _collect(process, limits, started, end_run)
        wall = time.monotonic() - started
        records = report.read()
        setup, ending = records.get("setup", {}), records.get("exit", {})
        exit_code = ending.get("exit_code", process.returncode)
        stderr_text = stderr.decode("utf-8", "replace")
        events = cgroup.events() if cgroup is not None else {}
        if limit_hit is None:
            limit_hit = _classify(exit_code, stderr_text, limits, ending, events)
        return ExecutionResult(
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr_text,
            exit_code=exit_code,
            limit_hit=limit_hit,
            wall_seconds=round(wall, 4),
            # No setup record: the launcher never reached the program (it refused, or was killed first).
            isolation=setup.get("isolation", "failed"),
            output_truncated=truncated,
            cgroup=cgroup.version if cgroup is not None else None,
            cgroup_fallback=cgroup_fallback,
            cgroup_events=events,
            private_dirs=setup.get("private_dirs", []),
        )
    finally:
        if cgroup is not None:
            cgroup.remove()
        if is_root:
            _kill_uid(uid)
        if report_read is not None:
            os.close(report_read)
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


def _exit_watch(pid: int) -> int | None:
    """A pidfd that turns readable when the launcher exits (None where the kernel has none)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _collect(process: subprocess.Popen, limits: SandboxLimits, started: float, end_run):
    """Read stdout/stderr until the launcher exits, the wall limit, or the output limit; then
    `end_run()` (kills what is left) and take what was already written."""
    buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    open_fds = set(buffers)
    limit_hit = None
    truncated = False
    watch = _exit_watch(process.pid)
    launcher_done = False

    def read(fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            buffers[fd] += chunk
        else:
            open_fds.discard(fd)

    while open_fds and not launcher_done:
        remaining = limits.wall_seconds - (time.monotonic() - started)
        if remaining <= 0:
            limit_hit = LIMIT_WALL_TIME
            break
        watched = [*open_fds, watch] if watch is not None else list(open_fds)
        readable, _, _ = select.select(watched, [], [], min(remaining, 0.5))
        for fd in readable:
            if fd != watch:
                read(fd)
        if sum(len(b) for b in buffers.values()) > limits.output_bytes:
            limit_hit, truncated = LIMIT_OUTPUT, True
            break
        # Once the launcher is gone the run is over: processes it left behind are killed below.
        launcher_done = watch in readable if watch is not None else process.poll() is not None
    end_run()
    if limit_hit is None:
        # What the program wrote before the end (every writer is dead now, or an escaped one in
        # the fallback mode: then only what is there already).
        while open_fds:
            readable, _, _ = select.select(list(open_fds), [], [], 0.2)
            if not readable:
                break
            for fd in readable:
                read(fd)
    if watch is not None:
        os.close(watch)
    for stream in (process.stdout, process.stderr):
        stream.close()
    out, err = (bytes(b) for b in buffers.values())
    cap = limits.output_bytes
    if len(out) + len(err) > cap and limit_hit is None:
        limit_hit, truncated = LIMIT_OUTPUT, True
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
