"""Sandbox launcher: run as `python -I launcher.py '<json>'` with a report pipe; sets up isolation,
runs the program in a child and reports on the pipe. A standalone script (no project imports), so
nothing of the caller's process is inherited: no threads, no locks, no preexec_fn hazards.

The launcher stays as the run's supervisor (root when the caller is; never in the run's cgroup,
never counted in its limits): a child subreaper that waits for the program, then ends what is left
of the run and reports on the pipe (JSON lines: `setup` from the child before it execs, `exit`
from the supervisor: exit code, CPU seconds, whether the run's disk filled up).

Steps, in order:
  1. new session (the caller kills the whole group; sweeps by uid and cgroup catch escapees);
  2. as root: new network, IPC and mount namespaces (no network, no SysV/POSIX IPC shared with the
     machine), then the child:
  3. joins the run's cgroup(s) (memory.max, pids.max; made by the caller) when there are any;
  4. as root with namespaces: finds every world-writable directory (within
     WORLD_WRITABLE_SCAN_DEPTH of / and at every mount point), remounts every mount of the machine
     read-only, then mounts one tmpfs of `disk_bytes` and binds a fresh directory of it over /tmp
     and each world-writable directory found (a fresh mqueue over an mqueue mount): whatever the
     program writes anywhere lands on that one capped tmpfs and vanishes with the run; the working
     directory is /tmp/sandbox;
  5. resource limits: CPU seconds, address space, file size, open files, no core dumps, and
     processes per uid where no cgroup bounds the run's tasks;
  6. as root with namespaces: drops to the slot's unprivileged uid/gid (no supplementary groups,
     no_new_privs, dies with the supervisor), so the program cannot write outside the tmpfs, read
     the caller's private files or /proc/<pid>/environ, or signal the caller or the supervisor;
  7. execs `python -I -B -u` with an empty environment (PATH, HOME, LANG only) and, where the
     namespaces were not available (not root), an audit hook that refuses sockets, signals to
     other processes and ctypes (a best-effort fallback: the result says which mode ran).
When the program exits, the supervisor (with namespaces) kills every process of the slot's uid
with one kill(-1) as that uid (atomic against forks), reaps them all, checks the tmpfs and reports.

Cost: the world-writable scan reads about a thousand directories (WORLD_WRITABLE_SCAN_DEPTH=4 on a
typical machine, ~10-30 ms); one remount per mount of the machine.
"""

import ctypes
import errno
import json
import os
import resource
import signal
import stat
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
# Per-mount options kept when a mount is made read-only.
MOUNT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}
# Kernel interfaces, not storage: their writable entries belong to root or to the writing process.
# The scan does not enter them (they are still made read-only).
PSEUDO_FILESYSTEMS = {
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "efivarfs",
    "autofs",
    "rpc_pipefs",
    "nsfs",
}
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
WORKDIR_INSIDE = "/tmp/sandbox"
ISOLATION_FAILED_EXIT = 70  # EX_SOFTWARE: the sandbox, not the program, failed
# How deep below / the launcher looks for world-writable directories to make private.
WORLD_WRITABLE_SCAN_DEPTH = 4

FALLBACK_GUARD = r"""
import sys
def _sandbox_guard(event, args):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"):
        raise PermissionError("network is disabled in the sandbox")
    if event in ("os.kill", "os.killpg", "signal.pthread_kill"):
        import os
        if event == "os.killpg" or args[0] not in (0, os.getpid()):
            raise PermissionError("signals to other processes are disabled in the sandbox")
    if event.startswith("ctypes."):
        raise PermissionError("ctypes is disabled in the sandbox")
sys.addaudithook(_sandbox_guard)
del _sandbox_guard
"""

RUN_PROGRAM = r"""
import sys
sys.argv = ["main.py"]
with open("main.py", encoding="utf-8") as _source:
    _code = compile(_source.read(), "main.py", "exec")
del _source
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc, source, target, fstype, flags, data=None):
    result = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def _expose(libc, paths) -> None:
    """Make the interpreter's directories reachable by the unprivileged uid: a directory on their
    path that others cannot traverse (e.g. /root, mode 0700, holding a pyenv) is covered with an
    empty tmpfs (read-only once filled) into which only the needed entries are bound back; the
    rest of it stays hidden."""
    for _ in range(4):
        blocked: dict = {}
        for path in paths:
            parts = os.path.abspath(path).split("/")[1:]
            for depth in range(1, len(parts)):
                directory = "/" + "/".join(parts[:depth])
                if not os.stat(directory).st_mode & 0o001:
                    blocked.setdefault(directory, set()).add(parts[depth])
                    break
        if not blocked:
            return
        for directory, children in blocked.items():
            handles = {child: os.open(os.path.join(directory, child), os.O_PATH) for child in children}
            kinds = {child: os.path.isdir(os.path.join(directory, child)) for child in children}
            _mount(libc, "tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
            for child, handle in handles.items():
                target = os.path.join(directory, child)
                if kinds[child]:
                    os.mkdir(target)
                else:
                    open(target, "w").close()
                _mount(libc, f"/proc/self/fd/{handle}", target, None, MS_BIND)
                os.close(handle)
            _mount(libc, None, directory, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mounts() -> list[tuple[str, str, int, bool]]:
    """(mount point, fstype, per-mount flags to keep, read-only) of every mount, parents first."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            before, after = line.rstrip("\n").split(" - ", 1)
            fields = before.split()
            point = fields[4].encode().decode("unicode_escape")
            options = fields[5].split(",")
            flags = 0
            for option in options:
                flags |= MOUNT_FLAGS.get(option, 0)
            mounts.append((point, after.split()[0], flags, "ro" in options))
    return mounts


def _world_writable_directories(mounts, max_depth: int) -> dict[str, tuple[int, str | None]]:
    """Directories others may write to: every one within max_depth levels of / and every mount
    point's root (pseudo filesystems not entered, links not followed, nothing under a directory
    others cannot traverse or one already found). Returns path -> (mode, fstype if a mount point)."""
    pseudo = {point for point, fstype, _, _ in mounts if fstype in PSEUDO_FILESYSTEMS}
    fstypes = {point: fstype for point, fstype, _, _ in mounts}
    found: dict[str, tuple[int, str | None]] = {}

    def visit(path: str, depth: int) -> None:
        if path in pseudo or path in found:
            return
        try:
            status = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(status.st_mode):
            return
        if status.st_mode & 0o002:
            found[path] = (stat.S_IMODE(status.st_mode), fstypes.get(path))
            return
        if depth >= max_depth or not status.st_mode & 0o001:
            return
        try:
            with os.scandir(path) as entries:
                children = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for child in children:
            visit(child, depth + 1)

    visit("/", 0)
    for point, _, _, _ in mounts:
        if not any(point == skipped or point.startswith(skipped + "/") for skipped in pseudo):
            visit(point, max_depth)
    return found


def _remount_read_only(libc, mounts) -> None:
    """Every mount of the (private copy of the) machine read-only, keeping its other options. A
    mount point that no longer resolves to a mount (covered by a later mount) is out of reach."""
    for point, _, flags, read_only in mounts:
        if read_only:
            continue
        try:
            _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.EINVAL):
                raise


def _isolate_namespaces(libc, config) -> list[str]:
    """Inside fresh net + IPC + mount namespaces (unshared by the supervisor): the machine
    read-only, one capped tmpfs over /tmp and every world-writable directory, the program in
    /tmp/sandbox. Returns the directories made private."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    mounts = _mounts()
    private = _world_writable_directories(mounts, WORLD_WRITABLE_SCAN_DEPTH)
    private["/tmp"] = (0o1777, private.get("/tmp", (0, None))[1])
    with open(os.path.join(config["workdir"], "main.py"), "rb") as source:
        code = source.read()
    # The interpreter may itself live under a directory about to be covered (a checkout and its
    # .venv under /tmp, as CI clones often are): hold those paths open and bind them back after.
    buried = {}
    for path in sorted({os.path.abspath(p) for p in config["expose"]}):
        under = any(path.startswith(directory + "/") for directory in private)
        if under and os.path.exists(path) and not any(path.startswith(kept + "/") for kept in buried):
            buried[path] = (os.open(path, os.O_PATH), os.path.isdir(path))
    _remount_read_only(libc, mounts)
    disk_bytes = config["disk_bytes"]
    inodes = max(1024, disk_bytes // 4096)
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_bytes},nr_inodes={inodes},mode=0755")
    staged = []
    for index, (directory, (mode, fstype)) in enumerate(sorted(private.items())):
        if fstype == "mqueue":  # the new IPC namespace's own queues
            _mount(libc, "mqueue", directory, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            continue
        source = f"/tmp/{index}"
        os.mkdir(source)
        os.chmod(source, mode)
        staged.append((source, directory))
    # /tmp last: binding over it hides the staging directories (they stay on the same tmpfs).
    for source, directory in sorted(staged, key=lambda pair: pair[1] == "/tmp"):
        _mount(libc, source, directory, None, MS_BIND)
    uid = config["uid"]
    os.mkdir(WORKDIR_INSIDE, 0o700)
    os.chown(WORKDIR_INSIDE, uid, uid)
    program = os.path.join(WORKDIR_INSIDE, "main.py")
    with open(program, "wb") as target:
        target.write(code)
    os.chown(program, uid, uid)
    for path, (handle, is_directory) in buried.items():
        _make_parents(os.path.dirname(path))
        if is_directory:
            os.mkdir(path, 0o755)
        else:
            open(path, "w").close()
        _mount(libc, f"/proc/self/fd/{handle}", path, None, MS_BIND)
        os.close(handle)
    _expose(libc, config["expose"])
    return sorted(private)


def _make_parents(directory: str) -> None:
    """mkdir -p with mode 0755 whatever the umask (the unprivileged uid must traverse them)."""
    if os.path.isdir(directory):
        return
    _make_parents(os.path.dirname(directory))
    os.mkdir(directory)
    os.chmod(directory, 0o755)


def _report(fd: int, record: dict) -> None:
    os.write(fd, (json.dumps(record) + "\n").encode())


def _run_program(libc, config: dict, namespaces: bool, report_fd: int) -> None:
    """The child: cgroup, mounts, limits, uid, then exec the program. Never returns."""
    setup = {"isolation": "namespaces+uid" if namespaces else "audit-hook", "private_dirs": []}
    workdir = config["workdir"]
    try:
        for procs in config["cgroup_procs"]:
            with open(procs, "w", encoding="ascii") as handle:
                handle.write(str(os.getpid()))
        if namespaces:
            setup["private_dirs"] = _isolate_namespaces(libc, config)
            workdir = WORKDIR_INSIDE
        limits = [
            (resource.RLIMIT_CPU, config["cpu_seconds"], config["cpu_seconds"] + 1),
            (resource.RLIMIT_AS, config["memory_bytes"], config["memory_bytes"]),
            (resource.RLIMIT_FSIZE, config["file_size_bytes"], config["file_size_bytes"]),
            (resource.RLIMIT_NOFILE, config["open_files"], config["open_files"]),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        if not config["cgroup_procs"]:  # pids.max bounds the run's tasks where there is a cgroup
            limits.append((resource.RLIMIT_NPROC, config["processes"], config["processes"]))
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))
        if namespaces:
            uid = config["uid"]
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.chdir(workdir)
        os.umask(0o077)
    except OSError as error:
        # Half-built isolation (a new mount namespace with /tmp covered) is neither the sandbox
        # nor the caller's view: refuse to run the program rather than guess.
        _report(report_fd, {"setup": {"isolation": "failed", "error": str(error), "private_dirs": []}})
        sys.stderr.write(f"sandbox: isolation set-up failed ({error}); the program was not run\n")
        os._exit(ISOLATION_FAILED_EXIT)
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    guard = "" if namespaces else FALLBACK_GUARD
    _report(report_fd, {"setup": setup})  # the report pipe closes on exec (not inheritable)
    os.execve(config["python"], [config["python"], "-I", "-B", "-u", "-c", guard + RUN_PROGRAM], environment)


def _live_processes_of(uid: int) -> bool:
    """Whether any process of uid is running (zombies aside: this subreaper reaps them)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat", "rb") as status:
                if status.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                    return True
        except (OSError, IndexError):
            continue
    return False


def _end_processes_of(uid: int) -> None:
    """Kill every process of the run's uid and reap them all (orphans come to this subreaper).
    kill(-1) as that uid signals all of its processes in one pass that forks cannot slip past;
    repeated while any is still running."""
    while True:
        helper = os.fork()
        if helper == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)
        if not _live_processes_of(uid):
            break
        time.sleep(0.002)
    while True:  # every one of them is dying: wait for the last
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main() -> None:
    config = json.loads(sys.argv[1])
    report_fd = config["report_fd"]
    os.set_inheritable(report_fd, False)
    os.setsid()
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the sandbox dies with its caller
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # the program's orphans are reaped here, not by init
    namespaces = False
    if os.geteuid() == 0 and config["use_namespaces"]:
        if libc.unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS) != 0:
            error = OSError(ctypes.get_errno(), "unshare")
            sys.stderr.write(f"sandbox: namespaces unavailable ({error}); using the audit-hook fallback\n")
        else:
            namespaces = True
    program = os.fork()
    if program == 0:
        try:
            _run_program(libc, config, namespaces, report_fd)
        finally:
            os._exit(ISOLATION_FAILED_EXIT)
    _, status, usage = os.wait4(program, 0)
    if namespaces:
        _end_processes_of(config["uid"])
    disk_full = False
    disk = os.statvfs(WORKDIR_INSIDE) if namespaces and os.path.isdir(WORKDIR_INSIDE) else None
    if disk is not None and disk.f_blocks * disk.f_frsize == config["disk_bytes"]:  # the run's tmpfs
        # tmpfs refuses a write when fewer free pages are left than it needs (a large folio may
        # need several): "full" is within 1% of the cap, or no inode left.
        disk_full = disk.f_bavail * disk.f_frsize < config["disk_bytes"] // 100 or disk.f_favail == 0
    exit_record = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "disk_full": disk_full,
    }
    _report(report_fd, {"exit": exit_record})


if __name__ == "__main__":
    main()
