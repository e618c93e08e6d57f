"""Graceful stop on SIGTERM/SIGUSR1 (Slurm preemption) and on a wall-time budget.

    stop = GracefulStop(["SIGTERM", "SIGUSR1"], exit_after_minutes=None)
    ...
    reason, signal_name = stop.agreed_reason(device)   # collective: every rank, once per step

Behaviour the launchers rely on (`trainer.exit_signal_handler`, `trainer.exit_signals`,
`trainer.signal_exit_code`, `trainer.exit_duration_minutes`):
1. A signal in `exit_signals` reaching ANY rank only sets a flag; the current step finishes.
2. After each step all ranks agree (one all-reduce of a small integer) whether to stop.
3. Then the loop saves a checkpoint (collective), rank 0 writes `exit_status.json` with
   reason "signal" (or "duration"), the signal's name and the iteration, and every process
   exits with `signal_exit_code` (default 75, EX_TEMPFAIL). A finished run exits 0 with reason
   "finished". The next start with the same `checkpoint.dir` resumes from `latest`.
Launchers: srun with one task per GPU delivers the signal to every rank directly. torchrun
forwards only SIGTERM/SIGINT/SIGHUP/SIGQUIT by default and dies on SIGUSR1: start it with
`--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout 300` (it then
forwards the signal and waits that long for the checkpoint before SIGKILLing the workers; it
exits non-zero, so read exit_status.json). DataLoader workers ignore the stop signals (Slurm
signals every process of a step). A second signal does not interrupt the save.

Cost: one all-reduce of one integer per step.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist

REASON_CODES = {0: None, 1: "duration", 2: "signal"}


class GracefulStop:
    """Records stop requests; `agreed_reason()` turns them into one decision for all ranks."""

    def __init__(
        self,
        signal_names: list[str] | tuple[str, ...] = ("SIGTERM", "SIGUSR1"),
        exit_after_minutes: float | None = None,
        enabled: bool = True,
    ):
        self.received_signal: str | None = None
        self._started = time.monotonic()
        self._deadline = None if exit_after_minutes is None else self._started + 60.0 * exit_after_minutes
        self._previous: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for name in signal_names:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame: Any) -> None:
        if self.received_signal is None:
            self.received_signal = signal.Signals(number).name
            # No logging here: a handler can run inside a logging call of the main thread.

    def local_reason(self) -> str | None:
        if self.received_signal is not None:
            return "signal"
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return "duration"
        return None

    def agreed_reason(self, device: Any = None) -> tuple[str | None, str | None]:
        """Collective over all ranks: (the strongest local reason, signal > duration > none; the
        name of the signal any rank received, if any)."""
        local = self.local_reason()
        number = int(getattr(signal, self.received_signal)) if self.received_signal else 0
        if not dist.is_initialized():
            return local, self.received_signal
        flags = torch.tensor([{None: 0, "duration": 1, "signal": 2}[local], number], dtype=torch.int64, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        reason, agreed_number = REASON_CODES[int(flags[0].item())], int(flags[1].item())
        return reason, signal.Signals(agreed_number).name if agreed_number else None

    def restore(self) -> None:
        """Put back the handlers that were there before (tests, library use)."""
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
