"""Real sandboxed processes against adversarial programs; the caller keeps working meanwhile."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from megatron_recipes.sandbox import (
    LIMIT_CPU_TIME,
    LIMIT_FILE_SIZE,
    LIMIT_MEMORY,
    LIMIT_OUTPUT,
    LIMIT_PROCESSES,
    LIMIT_WALL_TIME,
    SandboxLimits,
    SandboxPool,
    run_python,
)
from megatron_recipes.sandbox.executor import live_processes_of
from tests.support import REPO_ROOT

IS_ROOT = os.geteuid() == 0
# Wall and CPU limits far above what the programs need, so no result depends on the machine's
# load; a test about the wall or the CPU limit sets the other one far away (see ADVERSARIAL).
LIMITS = SandboxLimits(
    wall_seconds=120.0, cpu_seconds=30, memory_mb=512, processes=12, file_size_mb=4, output_bytes=64 * 1024
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(max_workers=2, limits=LIMITS) as sandboxes:
        yield sandboxes


def test_a_program_runs_and_reports(pool):
    result = pool.run(
        "import sympy\nprint(sympy.factorint(1001))\nimport sys; print('warn', file=sys.stderr); sys.exit(3)"
    )
    assert result.stdout == "{7: 1, 11: 1, 13: 1}\n"
    assert result.stderr.strip() == "warn"
    assert result.exit_code == 3 and result.limit_hit is None and not result.ok


# name -> (program, its limits, the limit it must hit). The busy loop needs 1 CPU second and has
# 120 wall seconds (it would need under 1% of a core to lose the race); the sleeper uses almost no
# CPU, so only its 2 wall seconds can stop it, however busy the machine.
ADVERSARIAL = {
    "infinite_loop": ("while True:\n    pass", replace(LIMITS, cpu_seconds=1), LIMIT_CPU_TIME),
    "sleeping": ("import time\ntime.sleep(600)", replace(LIMITS, wall_seconds=2.0), LIMIT_WALL_TIME),
    "memory_bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))", LIMITS, LIMIT_MEMORY),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", LIMITS, LIMIT_PROCESSES),
    "output_bomb": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", LIMITS, LIMIT_OUTPUT),
    "file_bomb": (
        "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
        LIMITS,
        LIMIT_FILE_SIZE,
    ),
    "kill_parent": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
        LIMITS,
        None,
    ),
    "ctypes_poke": ("import ctypes\nctypes.memset(0x1000, 0, 4096)\nprint('poked')", LIMITS, None),
}
FIRST_SLOT = 20  # the module pool uses slots 0 and 1


def test_adversarial_programs_are_contained_while_the_caller_works(pool):
    results = {}

    def run_all() -> None:
        with ThreadPoolExecutor(max_workers=2) as runners:
            runs = {
                name: runners.submit(run_python, code, limits, FIRST_SLOT + index)
                for index, (name, (code, limits, _)) in enumerate(ADVERSARIAL.items())
            }
            results.update({name: run.result() for name, run in runs.items()})

    runner = threading.Thread(target=run_all)
    runner.start()
    # The caller keeps computing while the programs misbehave (the sleeper alone keeps them
    # going for 2 s: ten rounds need about 1% of a core).
    work_done = 0
    while runner.is_alive():
        sum(i * i for i in range(20000))
        work_done += 1
    runner.join()
    assert work_done > 10
    for name, (_, _, expected) in ADVERSARIAL.items():
        if expected is not None:
            assert results[name].limit_hit == expected, (name, results[name])
    assert results["sleeping"].wall_seconds < 600  # cut short, not slept out
    assert results["output_bomb"].output_truncated and len(results["output_bomb"].stdout) <= LIMITS.output_bytes
    assert results["kill_parent"].exit_code != 0  # refused, and we are still here
    assert results["ctypes_poke"].exit_code not in (0, None) and "poked" not in results["ctypes_poke"].stdout
    if IS_ROOT:  # nothing of the fork bomb survives its run
        uids = [LIMITS.uid_base + slot for slot in range(FIRST_SLOT, FIRST_SLOT + len(ADVERSARIAL))]
        assert [pid for uid in uids for pid in live_processes_of(uid)] == []
    # The pool still works afterwards.
    assert pool.run("print(6 * 7)").stdout == "42\n"


def test_environment_and_files_of_the_caller_are_out_of_reach(pool, tmp_path, monkeypatch):
    monkeypatch.setenv("CALLER_SECRET_TOKEN", "hunter2")
    private = tmp_path / "private.txt"
    private.write_text("secret")
    private.chmod(0o600)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    program = f"""
import os
print("env", sorted(os.environ))
for attempt, action in [
    ("read_private", lambda: open({str(private)!r}).read()),
    ("read_parent_environ", lambda: open(f"/proc/{{os.getppid()}}/environ").read()),
    ("delete_victim", lambda: os.remove({str(victim)!r})),
    ("write_outside", lambda: open({str(tmp_path / "planted.txt")!r}, "w").write("x")),
    ("write_repository", lambda: open({str(Path(__file__).resolve().parent / "planted.py")!r}, "w").write("x")),
]:
    try:
        action()
        print(attempt, "SUCCEEDED")
    except OSError as error:
        print(attempt, "refused", type(error).__name__)
open("inside.txt", "w").write("fine")
print("inside", open("inside.txt").read())
"""
    result = pool.run(program)
    assert "hunter2" not in result.stdout and "CALLER_SECRET_TOKEN" not in result.stdout
    assert "inside fine" in result.stdout
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "planted.txt").exists()
    assert not (Path(__file__).resolve().parent / "planted.py").exists()
    if IS_ROOT:
        assert "SUCCEEDED" not in result.stdout, result.stdout


@pytest.mark.skipif(not IS_ROOT, reason="network and /tmp namespaces need root; the fallback is tested below")
def test_no_network_and_a_private_tmp(pool):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    marker = f"sandbox-marker-{os.getpid()}-{time.time_ns()}"
    program = f"""
import socket
open("/tmp/{marker}", "w").write("x")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("CONNECTED")
except OSError as error:
    print("no network:", type(error).__name__)
"""
    result = pool.run(program)
    assert "no network" in result.stdout
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    assert not Path(tempfile.gettempdir(), marker).exists()
    assert result.isolation == "namespaces+uid"


def test_audit_hook_fallback_blocks_sockets_and_signals():
    result = run_python(
        "import socket, os\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except PermissionError as e:\n    print('blocked', e)\n"
        "try:\n    os.kill(os.getppid(), 0)\nexcept PermissionError as e:\n    print('blocked', e)\n",
        LIMITS,
        slot=5,
        use_namespaces=False,
    )
    assert result.stdout.count("blocked") == 2, result.stdout + result.stderr
    assert result.isolation == "audit-hook"


@pytest.mark.skipif(not IS_ROOT, reason="namespaces and the per-slot uid need root")
def test_an_interpreter_under_tmp_stays_reachable_while_tmp_is_private():
    """A checkout and its .venv under /tmp (CI clones often live there): the sandbox covers /tmp
    with a fresh tmpfs, yet the interpreter, its venv and the working directory must stay
    reachable, and nothing else of the caller's /tmp may show."""
    scratch = Path(tempfile.mkdtemp(prefix="sandbox-venv-test-", dir="/tmp"))
    try:
        venv = scratch / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        purelib = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        # The caller (not the sandboxed program) imports the executor from this checkout.
        Path(purelib, "checkout.pth").write_text(f"{REPO_ROOT}\n")
        (scratch / "caller_secret.txt").write_text("not for the sandbox")
        program = (
            "import os, sys\nprint(sys.prefix)\nprint(sorted(os.listdir('/tmp')))\n"
            f"print(sorted(os.listdir('/tmp/{scratch.name}')))\nprint(os.getcwd())"
        )
        caller = (
            "import json\nfrom megatron_recipes.sandbox.executor import SandboxLimits, run_python\n"
            f"print(json.dumps(run_python({program!r}, SandboxLimits(wall_seconds=120)).as_dict()))"
        )
        completed = subprocess.run(
            [str(venv / "bin" / "python"), "-c", caller], capture_output=True, text=True, timeout=120
        )
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout)
        assert result["isolation"] == "namespaces+uid" and result["exit_code"] == 0, result
        prefix, listing, scratch_listing, cwd = result["stdout"].splitlines()
        assert prefix == str(venv)
        # Only the sandbox's own directory and the path down to the venv: no pytest
        # directories, no caller files.
        assert listing == repr(sorted(["sandbox", scratch.name])), listing
        assert scratch_listing == repr(["venv"]), scratch_listing  # caller_secret.txt stays hidden
        assert cwd == "/tmp/sandbox"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="per-slot uids exist only as root")
def _waiting_program_of(job: subprocess.Popen) -> int | None:
    """The sandboxed program started by `job` once it has blocked SIGUSR1, else None. SIGUSR2 is
    blocked with it as the visible mark (sigwait unblocks the awaited SIGUSR1 while it waits); a
    SIGUSR1 sent from then on stays pending until sigwait takes it."""
    for entry in os.listdir("/proc"):
        try:
            if (
                not entry.isdigit()
                or not LIMITS.uid_base <= os.stat(f"/proc/{entry}").st_uid < LIMITS.uid_base + LIMITS.uid_count
            ):
                continue
            status = dict(line.split(":\t", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines())
            ancestor = int(status["PPid"])
            while ancestor > 1 and ancestor != job.pid:
                ancestor = int(Path(f"/proc/{ancestor}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if ancestor == job.pid and int(status["SigBlk"], 16) & (1 << (signal.SIGUSR2 - 1)):
            return int(entry)
    return None


@pytest.mark.skipif(not IS_ROOT, reason="per-slot uids exist only as root")
def test_pools_in_separate_processes_claim_distinct_uids():
    """Two jobs on one node, each with its own pool: slot 0 of both must not run as the same uid,
    or the first run to end sweeps that uid and kills the other job's program. The programs wait
    for a signal that is sent only once both run, so they overlap however slowly the jobs start."""
    program = (
        "import os, signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})\n"
        "signal.sigwait({signal.SIGUSR1})\nprint(os.getuid())"
    )
    caller = (
        "import json\nfrom megatron_recipes.sandbox import SandboxLimits, SandboxPool\n"
        "with SandboxPool(max_workers=1, limits=SandboxLimits(wall_seconds=300)) as pool:\n"
        f"    print(json.dumps(pool.run({program!r}).as_dict()))"
    )

    def start_job() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", caller], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_for_program(job: subprocess.Popen) -> int:
        deadline = time.monotonic() + 240  # a guard against a hang, not a timing assertion
        while (program_pid := _waiting_program_of(job)) is None:
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.02)
        return program_pid

    jobs = [start_job()]
    waiting = [wait_for_program(jobs[0])]
    jobs.append(start_job())  # while the first job's program runs
    waiting.append(wait_for_program(jobs[1]))
    for program_pid in waiting:
        os.kill(program_pid, signal.SIGUSR1)
    results = []
    for job in jobs:
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert [r["exit_code"] for r in results] == [0, 0], results  # neither program was swept away
    uids = [int(r["stdout"]) for r in results]
    assert len(set(uids)) == 2 and all(LIMITS.uid_base <= uid < LIMITS.uid_base + LIMITS.uid_count for uid in uids), (
        uids
    )
