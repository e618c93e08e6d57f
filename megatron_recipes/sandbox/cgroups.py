"""One cgroup per sandboxed run: the run's memory and tasks bounded together, across all its processes.

`probe_cgroups()` finds what the kernel offers (once per process): cgroup v2 with the memory and
pids controllers (preferred), else cgroup v1 memory and pids hierarchies, else nothing, with the
reason. `RunCgroup.create(support, name, memory_bytes, tasks)` makes the run's cgroup(s) and writes
the limits; the launcher moves the program into them (`procs_files`) before it drops privileges;
`events()` says afterwards whether a limit was hit (OOM kills, refused forks); `kill()` and
`remove()` end it.

Where the cgroups live: v2 under `<cgroup2 mount>/deepseekmath-sandbox/` (the mount's root is the
only place a process-holding caller can enable controllers for children: the "no internal
processes" rule); v1 under the caller's own cgroup of each hierarchy, so the caller's own limits
still apply to its sandboxes. Nothing here works without root.

Cost: a few small file writes per run; the probe reads /proc/self/mountinfo once.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT_NAME = "deepseekmath-sandbox"
V2, V1 = "v2", "v1"


@dataclass(frozen=True)
class CgroupSupport:
    version: str | None  # "v2", "v1", or None when no cgroup can bound a run
    # v2: (parent,); v1: (memory parent, pids parent)
    parents: tuple[Path, ...] = ()
    # Why the preferred kind (v2) is not used, or why none is; None when v2 is.
    note: str | None = None


def _mounts() -> list[tuple[Path, str, str, set[str]]]:
    """(mount point, root inside the filesystem, fstype, super options) from /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            before, after = line.rstrip("\n").split(" - ", 1)
            fields = before.split()
            fstype, _source, options = (after.split() + ["", ""])[:3]
            point = fields[4].encode().decode("unicode_escape")
            root = fields[3].encode().decode("unicode_escape")
            mounts.append((Path(point), root, fstype, set(options.split(","))))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """Controller list -> the caller's cgroup path, from /proc/self/cgroup ("" is v2)."""
    own = {}
    with open("/proc/self/cgroup", encoding="utf-8") as table:
        for line in table:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    return own


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _probe_v2(mounts) -> tuple[Path | None, str]:
    mount = next((point for point, _, fstype, _ in mounts if fstype == "cgroup2"), None)
    if mount is None:
        return None, "no cgroup v2 is mounted"
    try:
        controllers = set((mount / "cgroup.controllers").read_text().split())
    except OSError as error:  # listed in mountinfo but out of sight (covered by another mount)
        return None, f"cgroup v2 at {mount} cannot be read ({error.strerror})"
    if not {"memory", "pids"} <= controllers:
        offered = " ".join(sorted(controllers)) or "no controllers"
        return None, f"cgroup v2 at {mount} offers {offered}, not memory and pids (bound to cgroup v1?)"
    parent = mount / PARENT_NAME
    try:
        if not {"memory", "pids"} <= set((mount / "cgroup.subtree_control").read_text().split()):
            _write(mount / "cgroup.subtree_control", "+memory +pids")
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", "+memory +pids")
    except OSError as error:
        return None, f"cgroup v2 at {mount} is not delegated to this process ({error.strerror}: {error.filename})"
    return parent, ""


def _probe_v1(mounts) -> tuple[tuple[Path, ...] | None, str]:
    own = _own_cgroups()
    parents = []
    for controller in ("memory", "pids"):
        hierarchy = next(
            ((point, root) for point, root, fstype, options in mounts if fstype == "cgroup" and controller in options),
            None,
        )
        if hierarchy is None:
            return None, f"no cgroup v1 {controller} hierarchy is mounted"
        point, root = hierarchy
        path = next((path for names, path in own.items() if controller in names.split(",")), "/")
        relative = os.path.relpath(path, root) if path.startswith(root) else "."
        parent = (point / relative).resolve() / PARENT_NAME
        if not (parent.parent / "cgroup.procs").exists():  # listed in mountinfo but out of sight
            return None, f"cgroup v1 {controller} at {point} cannot be read"
        try:
            parent.mkdir(exist_ok=True)
        except OSError as error:
            return None, f"cgroup v1 {controller} at {point} is not writable ({error.strerror})"
        parents.append(parent)
    return tuple(parents), ""


@functools.lru_cache(maxsize=1)
def probe_cgroups() -> CgroupSupport:
    """What can bound a whole run on this machine (as root); cached for the process's lifetime."""
    if os.geteuid() != 0:
        return CgroupSupport(None, note="cgroups are used only when the caller is root")
    mounts = _mounts()
    v2_parent, v2_note = _probe_v2(mounts)
    if v2_parent is not None:
        return CgroupSupport(V2, (v2_parent,))
    v1_parents, v1_note = _probe_v1(mounts)
    if v1_parents is not None:
        return CgroupSupport(V1, v1_parents, note=v2_note)
    return CgroupSupport(None, note=f"{v2_note}; {v1_note}")


def _counter(path: Path, key: str) -> int:
    """The value of `key` in a flat-keyed cgroup file (memory.events, pids.events, ...); 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class RunCgroup:
    """The cgroup(s) of one run: one directory under v2, one per hierarchy (memory, pids) under v1."""

    def __init__(self, version: str, directories: tuple[Path, ...]):
        self.version = version
        self.directories = directories

    @classmethod
    def create(cls, support: CgroupSupport, prefix: str, memory_bytes: int, tasks: int) -> "RunCgroup":
        """Make a fresh cgroup (per hierarchy) named `prefix` + a unique suffix and write the
        limits; stale ones with the same prefix (a crashed run's: the prefix names a uid the caller
        has claimed) are removed first. Fresh, because a killed run's zombies keep counting in
        pids.current until they are reaped. Raises OSError when that fails."""
        for parent in support.parents:
            for stale in parent.glob(prefix + "*"):
                cls(support.version, (stale,)).remove()
        name = f"{prefix}{os.getpid()}-{time.monotonic_ns()}"
        directories = tuple(parent / name for parent in support.parents)
        for directory in directories:
            directory.mkdir()
        run = cls(support.version, directories)
        try:
            if support.version == V2:
                (directory,) = directories
                _write(directory / "memory.max", str(memory_bytes))
                if (directory / "memory.swap.max").exists():
                    _write(directory / "memory.swap.max", "0")
                _write(directory / "pids.max", str(tasks))
            else:
                memory, pids = directories
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                _write(pids / "pids.max", str(tasks))
        except OSError:
            run.remove()
            raise
        return run

    @property
    def procs_files(self) -> list[str]:
        """Where the launcher writes the program's pid to move it in."""
        return [str(directory / "cgroup.procs") for directory in self.directories]

    def events(self) -> dict[str, int]:
        """oom_kill: processes the kernel killed at the memory limit; pids_max: forks refused at
        the task limit (both over the run's whole life: its cgroup is fresh)."""
        if self.version == V2:
            (directory,) = self.directories
            return {
                "oom_kill": _counter(directory / "memory.events", "oom_kill"),
                "pids_max": _counter(directory / "pids.events", "max"),
            }
        memory, pids = self.directories
        return {
            "oom_kill": _counter(memory / "memory.oom_control", "oom_kill"),
            "pids_max": _counter(pids / "pids.events", "max"),
        }

    def members(self) -> list[int]:
        pids: set[int] = set()
        for directory in self.directories:
            try:
                pids.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(pids)

    def kill(self) -> None:
        """SIGKILL every process of the run (cgroup.kill where the kernel has it, else one by one,
        repeated: a fork bomb forks while we kill)."""
        for directory in self.directories:
            if (directory / "cgroup.kill").exists():
                try:
                    _write(directory / "cgroup.kill", "1")
                except OSError:
                    pass
        for _ in range(100):
            pids = self.members()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    continue
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup(s); one that will not go (a process stuck in the
        kernel) stays and is removed by the next run of the same uid."""
        self.kill()
        for directory in self.directories:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
