"""Real sandboxed processes against adversarial programs; the caller keeps working meanwhile."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
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
LIMITS = SandboxLimits(
    wall_seconds=6.0, cpu_seconds=2, memory_mb=512, processes=12, file_size_mb=4, output_bytes=64 * 1024
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


ADVERSARIAL = {
    "infinite_loop": "while True:\n    pass",
    "sleeping": "import time\ntime.sleep(600)",
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "output_bomb": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "file_bomb": "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "ctypes_poke": "import ctypes\nctypes.memset(0x1000, 0, 4096)\nprint('poked')",
}


def test_adversarial_programs_are_contained_while_the_caller_works(pool):
    results = {}
    runner = threading.Thread(target=lambda: results.update(zip(ADVERSARIAL, pool.map(list(ADVERSARIAL.values())))))
    runner.start()
    # The caller keeps computing while the programs misbehave.
    work_done = 0
    while runner.is_alive():
        sum(i * i for i in range(20000))
        work_done += 1
    runner.join()
    assert work_done > 10
    assert results["infinite_loop"].limit_hit == LIMIT_CPU_TIME
    assert results["sleeping"].limit_hit == LIMIT_WALL_TIME
    assert results["sleeping"].wall_seconds < LIMITS.wall_seconds + 3
    assert results["memory_bomb"].limit_hit == LIMIT_MEMORY
    assert results["fork_bomb"].limit_hit in (LIMIT_PROCESSES, LIMIT_CPU_TIME, LIMIT_WALL_TIME)
    assert results["output_bomb"].limit_hit == LIMIT_OUTPUT and results["output_bomb"].output_truncated
    assert len(results["output_bomb"].stdout) <= LIMITS.output_bytes
    assert results["file_bomb"].limit_hit == LIMIT_FILE_SIZE
    assert results["kill_parent"].exit_code != 0  # refused, and we are still here
    assert results["ctypes_poke"].exit_code not in (0, None) and "poked" not in results["ctypes_poke"].stdout
    if IS_ROOT:  # nothing of the fork bomb survives its run
        survivors = [pid for slot in range(pool.max_workers) for pid in live_processes_of(LIMITS.uid_base + slot)]
        assert survivors == []
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
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept PermissionError as e:\n    print('blocked', e)\n"
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
            "import json\nfrom megatron_recipes.sandbox.executor import run_python\n"
            f"print(json.dumps(run_python({program!r}).as_dict()))"
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
def test_pools_in_separate_processes_claim_distinct_uids():
    """Two jobs on one node, each with its own pool: slot 0 of both must not run as the same uid,
    or the first run to end sweeps that uid and kills the other job's program."""
    program = "import os, time\ntime.sleep(3.0)\nprint(os.getuid())"
    caller = (
        "import json\nfrom megatron_recipes.sandbox import SandboxLimits, SandboxPool\n"
        "with SandboxPool(max_workers=1, limits=SandboxLimits(wall_seconds=20)) as pool:\n"
        f"    print(json.dumps(pool.run({program!r}).as_dict()))"
    )

    def start_job() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", caller], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    first = start_job()
    # Start the second job only once the first one's program runs, so the two runs overlap.
    deadline = time.monotonic() + 60
    while not live_processes_of(LIMITS.uid_base):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    jobs = [first, start_job()]
    results = []
    for job in jobs:
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert [r["exit_code"] for r in results] == [0, 0], results  # neither program was swept away
    uids = [int(r["stdout"]) for r in results]
    assert len(set(uids)) == 2 and all(LIMITS.uid_base <= uid < LIMITS.uid_base + LIMITS.uid_count for uid in uids), (
        uids
    )
