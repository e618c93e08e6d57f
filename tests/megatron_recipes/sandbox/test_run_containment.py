"""Hostile programs against what bounds a whole run (not one process): world-writable directories,
the run's disk, its memory and tasks across many processes, and the fallback where no cgroup is
available. Real sandboxed processes, real mounts and cgroups; the host is inspected afterwards."""

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from megatron_recipes.sandbox import (
    LIMIT_DISK,
    LIMIT_MEMORY,
    LIMIT_PROCESSES,
    SandboxLimits,
    run_python,
)
from megatron_recipes.sandbox.launcher import WORLD_WRITABLE_SCAN_DEPTH
from tests.support import REPO_ROOT

IS_ROOT = os.geteuid() == 0
# Wall and CPU limits far above what these programs need, so that no result depends on the
# machine's load: each test is about one other limit.
LIMITS = SandboxLimits(
    wall_seconds=120.0, cpu_seconds=30, memory_mb=512, processes=32, file_size_mb=4, output_bytes=1 << 20, disk_mb=64
)
IPC_CREAT, IPC_RMID = 0o1000, 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="private mounts, namespaces and cgroups need root")


def _mount_points() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every mount."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            before, after = line.split(" - ", 1)
            point = before.split()[4].encode().decode("unicode_escape")
            fstype, _source, options = after.split()[:3]
            mounts.append((point, fstype, options))
    return mounts


def _cgroup_offer() -> tuple[str | None, str]:
    """What this machine's kernel offers, read independently of the sandbox's own probe."""
    for point, fstype, _ in _mount_points():
        if fstype == "cgroup2":
            controllers = Path(point, "cgroup.controllers").read_text().split()
            if {"memory", "pids"} <= set(controllers):
                return "v2", f"cgroup v2 at {point} offers {' '.join(controllers)}"
            v2_note = f"cgroup v2 at {point} offers only {' '.join(controllers) or 'no controllers'}"
            break
    else:
        v2_note = "no cgroup v2 mounted"
    v1 = {option for _, fstype, options in _mount_points() if fstype == "cgroup" for option in options.split(",")}
    if {"memory", "pids"} <= v1:
        return "v1", f"{v2_note}; memory and pids are cgroup v1 hierarchies"
    return None, f"{v2_note}; no cgroup v1 memory and pids hierarchies"


CGROUP_OFFER, CGROUP_NOTE = _cgroup_offer()
needs_cgroup = pytest.mark.skipif(
    not IS_ROOT or CGROUP_OFFER is None, reason=f"needs root and a memory+pids cgroup ({CGROUP_NOTE})"
)


def _host_world_writable_directories(max_depth: int = 6) -> set[str]:
    """World-writable directories (and links to them) reachable from / to max_depth and at every
    mount point, /proc and /sys excepted: a deeper walk than the launcher's own."""
    found: set[str] = set()

    def visit(path: str, depth: int) -> None:
        try:
            status = os.lstat(path)
            if stat.S_ISLNK(status.st_mode):
                target = os.stat(path)
                if stat.S_ISDIR(target.st_mode) and target.st_mode & 0o002:
                    found.add(path)
                return
        except OSError:
            return
        if not stat.S_ISDIR(status.st_mode):
            return
        if status.st_mode & 0o002:
            found.add(path)
            return
        if depth >= max_depth or not status.st_mode & 0o001:
            return
        try:
            names = os.listdir(path)
        except OSError:
            return
        for name in names:
            child = os.path.join(path, name)
            if child not in ("/proc", "/sys"):
                visit(child, depth + 1)

    visit("/", 0)
    for point, _, _ in _mount_points():
        if not point.startswith(("/proc", "/sys")):
            visit(point, 0)
    return found


def _sysv_shared_memory_keys() -> set[int]:
    with open("/proc/sysvipc/shm", encoding="utf-8") as table:
        return {int(line.split()[0]) for line in list(table)[1:]}


def _remove_sysv_shared_memory(key: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(key, 0, 0)
    if shmid >= 0:
        libc.shmctl(shmid, IPC_RMID, None)


@needs_root
def test_world_writable_directories_are_private_to_the_run_or_read_only():
    """Writes into every world-writable directory of the machine (the usual ones, one planted at
    run time at a shallow depth, one planted deeper than the launcher looks) and a SysV shared
    memory segment: nothing of it may outlive the run."""
    marker = f"left-by-sandbox-{os.getpid()}"
    shm_key = 0x5A000000 + os.getpid() % 0xFFFF
    planted_shallow = Path(f"/run/sandbox-test-world-writable-{os.getpid()}")
    planted_deep = REPO_ROOT / "build" / f"sandbox-test-{os.getpid()}" / "a" / "b" / "world-writable"
    planted_shallow.mkdir()
    planted_shallow.chmod(0o1777)
    planted_deep.mkdir(parents=True)
    planted_deep.chmod(0o777)
    targets = sorted(_host_world_writable_directories() | {str(planted_deep)})
    try:
        assert str(planted_shallow) in targets
        program = f"""
import ctypes, json, os
report = {{}}
for directory in {targets!r}:
    try:
        with open(os.path.join(directory, {marker!r}), "w") as handle:
            handle.write("left behind")
        report[directory] = "written"
    except OSError as error:
        report[directory] = error.errno
libc = ctypes.CDLL(None, use_errno=True)
report["sysv_shm"] = libc.shmget({shm_key}, 4096, {IPC_CREAT | 0o666})
visible = {{}}  # mount point -> options of the top mount there
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    visible[fields[4]] = fields[5].split(",")
report["rw_mounts"] = sorted(point for point, options in visible.items() if "rw" in options)
print(json.dumps(report))
"""
        result = run_python(program, LIMITS)
        assert result.exit_code == 0 and result.isolation == "namespaces+uid", result.stderr
        report = json.loads(result.stdout)
        persisted = [directory for directory in targets if os.path.lexists(os.path.join(directory, marker))]
        assert persisted == [], (persisted, report)
        assert report["sysv_shm"] >= 0 and shm_key not in _sysv_shared_memory_keys()
        # Everything else of the machine is read-only: the only writable mounts are the private ones.
        private_or_below = [
            point
            for point in report["rw_mounts"]
            if not any(point == d or point.startswith(d.rstrip("/") + "/") for d in result.private_dirs)
        ]
        assert private_or_below == [], private_or_below
        # Found at run time, not from a list: the planted directory is private (writable, gone
        # afterwards) like /tmp; the deep one is out of reach (read-only, or hidden under /tmp).
        private = {os.path.realpath(directory) for directory in result.private_dirs}
        assert {"/tmp", str(planted_shallow)} <= private, result.private_dirs
        assert report[str(planted_shallow)] == "written" and report["/tmp"] == "written"
        assert report[str(planted_deep)] != "written"
        shallow = {
            directory
            for directory in targets
            if directory.count("/") <= WORLD_WRITABLE_SCAN_DEPTH and not os.path.islink(directory)
        }
        assert shallow <= private, sorted(shallow - private)
        for directory in private & set(targets):
            assert report[directory] == "written", (directory, report[directory])
    finally:
        for directory in targets:
            Path(directory, marker).unlink(missing_ok=True)
        _remove_sysv_shared_memory(shm_key)
        shutil.rmtree(planted_shallow, ignore_errors=True)
        shutil.rmtree(REPO_ROOT / "build" / f"sandbox-test-{os.getpid()}", ignore_errors=True)


FILL_DIRECTORIES = ("/tmp", "/dev/shm", "/var/tmp", "/run/lock")
FILL_DISK = """
import json, os
directories = [d for d in (".", *{directories!r}) if os.path.isdir(d)]
written, error = 0, None
for index in range(40):
    try:
        with open(os.path.join(directories[index % len(directories)], f"{prefix}{{index}}.bin"), "wb") as handle:
            handle.write(b"x" * (3 << 20))
        written += 3
    except OSError as failure:
        error = failure.errno
        break
print(json.dumps({{"written_mib": written, "errno": error}}))
"""


@needs_root
def test_many_files_fill_one_capped_disk_for_the_whole_run():
    """40 files of 3 MiB (each under the 4 MiB file-size limit) spread over the working directory
    and the world-writable directories: the one run-wide cap stops them and is reported."""
    limits = replace(LIMITS, disk_mb=32)
    prefix = f"sandbox-fill-{os.getpid()}-"
    try:
        result = run_python(FILL_DISK.format(directories=FILL_DIRECTORIES, prefix=prefix), limits)
    finally:  # what a sandbox without private directories leaves behind
        for directory in FILL_DIRECTORIES:
            for left in Path(directory).glob(prefix + "*"):
                left.unlink()
    report = json.loads(result.stdout)
    assert report["errno"] == 28 and report["written_mib"] <= limits.disk_mb, report  # ENOSPC
    assert result.limit_hit == LIMIT_DISK


HOLD_MEMORY_IN_CHILDREN = """
import json, os, signal
ready_read, ready_write = os.pipe()
children = []
for _ in range({children}):
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        block = b"x" * ({mib} << 20)  # written, so resident
        os.write(ready_write, b"+")
        os.close(ready_write)
        signal.pause()
        os._exit(0)
    children.append(pid)
os.close(ready_write)
holding = 0
while chunk := os.read(ready_read, 64):  # EOF once every child has reported or died
    holding += len(chunk)
print(json.dumps({{"children_holding": holding}}))
"""


@needs_cgroup
def test_a_fork_tree_holding_memory_hits_the_run_memory_limit():
    """Six processes of 64 MiB each (384 MiB) under a 160 MiB run: every process is within its
    own address-space limit, only the run's cgroup can stop the total."""
    limits = replace(LIMITS, memory_mb=160)
    result = run_python(HOLD_MEMORY_IN_CHILDREN.format(children=6, mib=64), limits)
    assert result.cgroup == CGROUP_OFFER, (result.cgroup, result.cgroup_fallback)
    assert result.limit_hit == LIMIT_MEMORY and result.cgroup_events["oom_kill"] >= 1, result
    if result.stdout:
        assert json.loads(result.stdout)["children_holding"] < 6


SPAWN_PROCESSES = """
import json, os, signal
children, refused = [], 0
for _ in range(20):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
print(json.dumps({"started": len(children), "refused": refused}))
"""


@needs_cgroup
def test_a_process_tree_beyond_the_run_task_limit_is_refused_by_the_cgroup():
    limits = replace(LIMITS, processes=8)
    result = run_python(SPAWN_PROCESSES, limits)
    assert json.loads(result.stdout) == {"started": 7, "refused": 13}, result.stdout + result.stderr
    assert result.cgroup == CGROUP_OFFER and result.cgroup_events["pids_max"] >= 1, result
    assert result.limit_hit == LIMIT_PROCESSES


@needs_cgroup
def test_the_run_sits_in_its_own_cgroup_with_its_limits():
    """Read from inside the sandbox: its cgroup and the limits written there."""
    limits = replace(LIMITS, memory_mb=300, processes=20)
    program = """
import json
paths = {}
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\\n").split(":", 2)
    paths[controllers] = path
def read(*parts):
    return open("/sys/fs/cgroup/" + "/".join(p.strip("/") for p in parts if p.strip("/"))).read().strip()
if "" in paths and paths[""] != "/" and "memory" not in paths:
    print(json.dumps({"memory": read(paths[""], "memory.max"), "pids": read(paths[""], "pids.max"), "path": paths[""]}))
else:
    print(json.dumps({"memory": read("memory", paths["memory"], "memory.limit_in_bytes"),
                      "pids": read("pids", paths["pids"], "pids.max"), "path": paths["memory"]}))
"""
    result = run_python(program, limits)
    assert result.exit_code == 0, result.stderr
    inside = json.loads(result.stdout)
    assert int(inside["memory"]) == 300 << 20 and int(inside["pids"]) == 20, inside
    assert inside["path"].rstrip("/").split("/")[-1].startswith("uid-"), inside


@pytest.mark.skipif(not IS_ROOT, reason="cgroups are used only as root")
def test_cgroup_v2_is_preferred_where_the_kernel_offers_it():
    if CGROUP_OFFER != "v2":
        pytest.skip(f"this machine offers no cgroup v2 memory+pids: {CGROUP_NOTE}")
    result = run_python("print('ok')", LIMITS)
    assert result.stdout == "ok\n"
    assert result.cgroup == "v2" or "v2" in (result.cgroup_fallback or ""), (result.cgroup, result.cgroup_fallback)


def test_forced_fallback_bounds_each_process_and_says_so():
    """use_cgroup=False: no run-wide bound (the same fork tree now holds all its memory), the
    result says why, and each process is still bounded on its own."""
    limits = replace(LIMITS, use_cgroup=False, memory_mb=160)
    tree = run_python(HOLD_MEMORY_IN_CHILDREN.format(children=4, mib=64), limits)
    assert tree.cgroup is None and "use_cgroup" in tree.cgroup_fallback, tree.cgroup_fallback
    assert json.loads(tree.stdout) == {"children_holding": 4} and tree.limit_hit is None, tree
    bomb = run_python("blocks = []\nwhile True:\n    blocks.append(b'x' * (32 << 20))", limits)
    assert bomb.limit_hit == LIMIT_MEMORY and bomb.cgroup is None
    if IS_ROOT:  # RLIMIT_NPROC counts the slot's own uid only when the program runs as that uid
        spawn = run_python(SPAWN_PROCESSES, replace(limits, processes=8))
        assert json.loads(spawn.stdout) == {"started": 7, "refused": 13}, spawn.stdout + spawn.stderr
        assert spawn.cgroup is None


@needs_root
def test_fallback_where_the_machine_offers_no_cgroup():
    """A caller whose /sys/fs/cgroup is empty (a private mount namespace over it): the sandbox
    runs with per-process limits and the result says why."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    caller = (
        "import json\nfrom megatron_recipes.sandbox import SandboxLimits, run_python\n"
        "print(json.dumps(run_python('print(6 * 7)', SandboxLimits(wall_seconds=120)).as_dict()))"
    )
    completed = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none /sys/fs/cgroup && exec "$0" -c "$1"',
            sys.executable,
            caller,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["stdout"] == "42\n" and result["exit_code"] == 0, result
    assert result["cgroup"] is None and "cgroup" in result["cgroup_fallback"], result


@needs_root
def test_posix_message_queues_stay_private():
    """A caller whose /var/tmp is an mqueue file system (how /dev/mqueue is mounted): the program
    gets its own queues there (a new IPC namespace and a fresh mqueue mount), and neither the
    queue it creates with mq_open nor the one it creates as a file reaches the caller's."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    program = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]\n"
        "opened = libc.mq_open(b'/sandbox-queue', os.O_CREAT | os.O_RDWR, 0o666, None)\n"
        "open('/var/tmp/sandbox-file-queue', 'w').close()\n"
        "print(opened >= 0, sorted(os.listdir('/var/tmp')))"
    )
    caller = (
        "import json, os\nfrom megatron_recipes.sandbox import SandboxLimits, run_python\n"
        f"result = run_python({program!r}, SandboxLimits(wall_seconds=120)).as_dict()\n"
        "print(json.dumps({'result': result, 'after': sorted(os.listdir('/var/tmp'))}))"
    )
    try:
        completed = subprocess.run(
            [
                unshare,
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount -t mqueue none /var/tmp && exec "$0" -c "$1"',
                sys.executable,
                caller,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:  # a queue that escaped to the machine's IPC namespace
        ctypes.CDLL(None, use_errno=True).mq_unlink(b"/sandbox-queue")
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    result = outcome["result"]
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "True ['sandbox-file-queue', 'sandbox-queue']\n", result
    assert "/var/tmp" in result["private_dirs"]
    assert outcome["after"] == [], outcome["after"]  # the caller's queues: none of the program's
