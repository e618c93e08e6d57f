"""Sandbox launcher: run as `python -I launcher.py '<json>'`; sets up isolation, then execs Python
on the program. A standalone script (no project imports), so nothing of the caller's process is
inherited: no threads, no locks, no preexec_fn hazards.

Steps, in order:
  1. new session (the caller kills the whole group, and a sweep by uid catches escapees);
  2. as root: new network namespace (no interfaces but a down loopback: no network at all) and a
     new mount namespace with fresh tmpfs over /tmp, /var/tmp and /dev/shm, the working directory
     bound inside the new /tmp;
  3. resource limits: CPU seconds, address space, file size, open files, processes, no core dumps;
  4. as root with namespaces: drop to the slot's unprivileged uid/gid (no supplementary groups, no_new_privs), so
     the program cannot write outside its directory, read the caller's private files or
     /proc/<pid>/environ, or signal the caller;
  5. exec `python -I -B -u` with an empty environment (PATH, HOME, LANG only) and, where the
     namespaces were not available (not root), an audit hook that refuses sockets, signals to
     other processes and ctypes (a best-effort fallback: say so in the result).
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
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
    empty tmpfs into which only the needed entries are bound back; the rest of it stays hidden."""
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


def _isolate_namespaces(libc, workdir: str, tmpfs_mb: int, expose) -> str:
    """Inside fresh net + mount namespaces (unshared by the caller): private mounts, tmpfs over
    /tmp, /var/tmp and /dev/shm; returns the working directory's path inside them."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    workdir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    covered = [directory for directory in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(directory)]
    # The interpreter may itself live under a directory about to be covered (a checkout and its
    # .venv under /tmp, as CI clones often are): hold those paths open and bind them back after.
    buried = {}
    for path in sorted({os.path.abspath(p) for p in expose}):
        under = any(path.startswith(directory + "/") for directory in covered)
        if under and os.path.exists(path) and not any(path.startswith(kept + "/") for kept in buried):
            buried[path] = (os.open(path, os.O_PATH), os.path.isdir(path))
    for directory in covered:
        _mount(libc, "tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    inside = "/tmp/sandbox"
    os.mkdir(inside)
    _mount(libc, f"/proc/self/fd/{workdir_fd}", inside, None, MS_BIND)
    os.close(workdir_fd)
    for path, (handle, is_directory) in buried.items():
        _make_parents(os.path.dirname(path))
        if is_directory:
            os.mkdir(path, 0o755)
        else:
            open(path, "w").close()
        _mount(libc, f"/proc/self/fd/{handle}", path, None, MS_BIND)
        os.close(handle)
    _expose(libc, expose)
    return inside


def _make_parents(directory: str) -> None:
    """mkdir -p with mode 0755 whatever the umask (the unprivileged uid must traverse them)."""
    if os.path.isdir(directory):
        return
    _make_parents(os.path.dirname(directory))
    os.mkdir(directory)
    os.chmod(directory, 0o755)


def main() -> None:
    config = json.loads(sys.argv[1])
    os.setsid()
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, 9)  # the sandbox dies with its caller
    workdir = config["workdir"]
    is_root = os.geteuid() == 0
    isolated = False
    if is_root and config.get("use_namespaces", True):
        if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
            error = OSError(ctypes.get_errno(), "unshare")
            sys.stderr.write(f"sandbox: namespaces unavailable ({error}); using the audit-hook fallback\n")
        else:
            try:
                workdir = _isolate_namespaces(libc, workdir, config["tmpfs_mb"], config["expose"])
            except OSError as error:
                # Half-built isolation (a new mount namespace with /tmp covered) is neither the
                # sandbox nor the caller's view: refuse to run the program rather than guess.
                sys.stderr.write(f"sandbox: isolation set-up failed ({error}); the program was not run\n")
                sys.exit(ISOLATION_FAILED_EXIT)
            isolated = True
    limits = [
        (resource.RLIMIT_CPU, config["cpu_seconds"], config["cpu_seconds"] + 1),
        (resource.RLIMIT_AS, config["memory_bytes"], config["memory_bytes"]),
        (resource.RLIMIT_FSIZE, config["file_size_bytes"], config["file_size_bytes"]),
        (resource.RLIMIT_NOFILE, config["open_files"], config["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, config["processes"], config["processes"]),
    ]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if is_root and isolated:
        uid = config["uid"]
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(workdir)
    os.umask(0o077)
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    guard = "" if isolated else FALLBACK_GUARD
    os.execve(config["python"], [config["python"], "-I", "-B", "-u", "-c", guard + RUN_PROGRAM], environment)


if __name__ == "__main__":
    main()
