"""The judge that runs inside the sandbox: one model-written program against every test of a code
problem. A standalone file (standard library only): code_problems.py sends its source, followed
by one `judge(...)` call holding the program and the tests, as the sandboxed program.

Each test runs in a forked child of the judge (a fork costs milliseconds where a new interpreter
costs ~50 ms): the test's input is on file descriptor 0 (so `input()`, `sys.stdin` and
`open(0)` all read it), fd 1 goes to a file, the child has its own CPU-seconds limit and a wall
alarm, and exits; the judge compares what it wrote with the expected output. Where fork is
refused (a per-user process limit below the user's process count), the test runs in the judge's
own process with the same redirections and a wall-clock timer.

Output (the judge's only line on stdout): JUDGE_MARKER + JSON
    {"compiled": bool, "error": str, "passed": int, "total": int,
     "results": [{"status": "passed" | "wrong" | "timeout" | "error", "detail": str}, ...]}
Stops at the first failing test by default (a sample passes only if every test passes).

Output comparison: stdin tests compare whitespace-separated tokens, numbers within an absolute or
relative 1e-6 (the usual judges' default checker); functional tests compare the JSON value the
method returned with the expected JSON (numbers within 1e-6).
"""

import io
import json
import math
import os
import resource
import signal
import sys
import traceback

JUDGE_MARKER = "@@judge-result@@"
STATUS_PASSED, STATUS_WRONG, STATUS_TIMEOUT, STATUS_ERROR = "passed", "wrong", "timeout", "error"
_TIMEOUT_SIGNALS = (signal.SIGXCPU, signal.SIGKILL, signal.SIGALRM)
_TOLERANCE = 1e-6


def _number(token):
    try:
        value = float(token)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _close(got, expected) -> bool:
    return abs(got - expected) <= _TOLERANCE * max(1.0, abs(expected))


def same_tokens(got: str, expected: str) -> bool:
    got_tokens, expected_tokens = got.split(), expected.split()
    if len(got_tokens) != len(expected_tokens):
        return False
    for a, b in zip(got_tokens, expected_tokens):
        if a == b:
            continue
        x, y = _number(a), _number(b)
        if x is None or y is None or not _close(x, y):
            return False
    return True


def same_value(got, expected) -> bool:
    if isinstance(got, bool) or isinstance(expected, bool):
        return got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return _close(float(got), float(expected))
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(same_value(a, b) for a, b in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in got)
    return got == expected


class _WallTimeout(BaseException):
    """The in-process fallback's wall timer expired (a BaseException: the program cannot catch it
    with `except Exception`)."""


def _parse_json_lines(text: str):
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def _redirect(input_path: str, output_path: str, error_path: str) -> None:
    for fd, path, flags in (
        (0, input_path, os.O_RDONLY),
        (1, output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, error_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        handle = os.open(path, flags, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8")


def _execute(compiled, test: dict, entry_point: str) -> int:
    """Run the program on one test with fds already redirected; returns an exit status."""
    try:
        if test["mode"] == "functional":
            namespace = {"__name__": "solution"}
            exec(compiled, namespace)
            arguments = _parse_json_lines(test["input"])
            target = namespace.get("Solution")
            method = getattr(target(), entry_point) if target is not None else namespace[entry_point]
            result = method(*arguments)
            with open("result.json", "w", encoding="utf-8") as handle:
                json.dump(result, handle)
        else:
            exec(compiled, {"__name__": "__main__"})
        return 0
    except _WallTimeout:
        raise
    except SystemExit as stop:
        code = stop.code
        return 0 if code is None else (code if isinstance(code, int) else 1)
    except BaseException:  # the program's own failure: its traceback goes to its stderr file
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream: nothing more to save
                pass


def _limit_cpu_seconds(seconds: int) -> None:
    """This process's CPU seconds (the sandbox's hard limit, inherited, caps them)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        seconds = min(seconds, max(1, hard - 1))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, hard))
    else:
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _run_forked(compiled, test: dict, entry_point: str, time_limit: float):
    """(status kind, exit code or signal) of one test in a forked child."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _redirect("input.txt", "output.txt", "error.txt")
            _limit_cpu_seconds(max(1, math.ceil(time_limit)))
            signal.alarm(max(1, math.ceil(time_limit * 2)) + 1)  # sleeping or blocked programs
            code = _execute(compiled, test, entry_point)
        except BaseException:  # the set-up failed: say why in the test's error file
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code if 0 <= code < 256 else 1)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("signal", os.WTERMSIG(status))
    return ("exit", os.WEXITSTATUS(status))


def _run_in_process(compiled, test: dict, entry_point: str, time_limit: float):
    """The same run without fork: redirect, run under a wall timer, restore."""
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)

    def expire(signum, frame):
        raise _WallTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        _redirect("input.txt", "output.txt", "error.txt")
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            code = _execute(compiled, test, entry_point)
        except _WallTimeout:
            return ("signal", signal.SIGALRM)
        return ("exit", code)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for fd, saved in zip((0, 1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        sys.stdin, sys.stdout, sys.stderr = saved_streams


def _read(path: str, limit: int = 1 << 24) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except FileNotFoundError:
        return ""


def _check(test: dict, outcome) -> dict:
    kind, value = outcome
    if kind == "signal":
        if value in _TIMEOUT_SIGNALS:
            return {"status": STATUS_TIMEOUT, "detail": f"killed by signal {value}"}
        return {"status": STATUS_ERROR, "detail": f"killed by signal {value}"}
    if value != 0:
        lines = [line for line in _read("error.txt").strip().splitlines() if line.strip()]
        return {"status": STATUS_ERROR, "detail": (lines[-1] if lines else f"exit status {value}")[:300]}
    if test["mode"] == "functional":
        try:
            got = json.loads(_read("result.json"))
            expected = _parse_json_lines(test["output"])
            expected = expected[0] if len(expected) == 1 else expected
        except ValueError as error:
            return {"status": STATUS_WRONG, "detail": f"unreadable value ({error})"[:300]}
        passed = same_value(got, expected)
        detail = "" if passed else f"returned {json.dumps(got)[:120]}"
    else:
        got = _read("output.txt")
        passed = same_tokens(got, test["output"])
        detail = "" if passed else f"printed {got[:120]!r}"
    return {"status": STATUS_PASSED if passed else STATUS_WRONG, "detail": detail}


def judge(solution: str, tests: list, entry_point: str = "", time_limit: float = 6.0, stop_at_failure: bool = True):
    report = {"compiled": True, "error": "", "passed": 0, "total": len(tests), "results": []}
    try:
        compiled = compile(solution, "solution.py", "exec")
    except (SyntaxError, ValueError) as error:
        report.update(compiled=False, error=f"{type(error).__name__}: {error}"[:300])
        compiled = None
    if compiled is not None:
        for test in tests:
            with open("input.txt", "w", encoding="utf-8") as handle:
                handle.write(test["input"])
            for leftover in ("output.txt", "error.txt", "result.json"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            try:
                outcome = _run_forked(compiled, test, entry_point, time_limit)
            except OSError:  # fork refused (process limit): run it here instead
                outcome = _run_in_process(compiled, test, entry_point, time_limit)
            result = _check(test, outcome)
            report["results"].append(result)
            if result["status"] == STATUS_PASSED:
                report["passed"] += 1
            elif stop_at_failure:
                break
    sys.stdout.write(JUDGE_MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()
