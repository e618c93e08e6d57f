"""Training metrics: console progress line, metrics.jsonl and TensorBoard, MFU and memory.

Rank 0 writes, per step, one JSON line to `<output_dir>/metrics.jsonl` (exact values: tests and
tools read it; after a resume, steps after the checkpoint appear again - the last line of a
step wins), and every `log_interval` steps prints one line such as

    step 120/1000 | loss 3.4121 | lr 3.00e-03 | grad norm 0.812 | 41,230 tok/s | MFU 38.1% | mem 61.2 GiB | 1.02 s/step

with values averaged over the interval, and writes the same scalars to TensorBoard under
`<output_dir>/tensorboard`. Extra metrics (returned by a loss function or a hook) are logged
alongside under their own names.

MFU = model FLOPs per token (models.training_flops_per_token) x tokens/s / (devices x peak
FLOP/s per device). Peak: `trainer.peak_tflops_per_device`, else the dense bf16/fp16 figure of
known GPUs (H100/H200 SXM 989, A100 312 TFLOP/s); none on the CPU (MFU then not reported).
Memory: peak allocated CUDA memory on GPUs, resident set size on the CPU.

Cost: constant per step.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import psutil
import torch
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("megatron_recipes.train")

# Dense tensor-core peak (TFLOP/s) for bf16/fp16, from the vendors' data sheets.
KNOWN_PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
)


def peak_tflops_per_device(configured: float | None, device: str, precision: str) -> float | None:
    if configured is not None:
        return configured
    if device != "cuda" or precision not in ("bf16", "fp16"):
        return None

    name = torch.cuda.get_device_name()
    for marker, tflops in KNOWN_PEAK_TFLOPS:
        if marker in name:
            return tflops
    return None


def memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30

    return psutil.Process().memory_info().rss / 2**30


class ProgressLogger:
    """Console, JSONL and TensorBoard output of rank 0 (other ranks: no-ops)."""

    def __init__(
        self,
        output_dir: str | Path,
        total_steps: int,
        log_interval: int,
        enabled: bool,
        tensorboard: bool = True,
        flops_per_token: float | None = None,
        peak_flops_total: float | None = None,
    ):
        self.enabled = enabled
        self.total_steps = total_steps
        self.log_interval = log_interval
        self.flops_per_token = flops_per_token
        self.peak_flops_total = peak_flops_total
        self._window: list[dict[str, float]] = []
        self._jsonl = None
        self._writer = None
        if not enabled:
            return
        directory = Path(output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(directory / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            self._writer = SummaryWriter(str(directory / "tensorboard"))

    def throughput(self, tokens: int, seconds: float) -> dict[str, float]:
        figures = {"tokens_per_second": tokens / seconds if seconds > 0 else math.nan}
        if self.flops_per_token and self.peak_flops_total:
            figures["mfu"] = figures["tokens_per_second"] * self.flops_per_token / self.peak_flops_total
        return figures

    def record_step(self, iteration: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": iteration, **{k: float(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(f"train/{name}", float(value), iteration)
        self._window.append(dict(values))
        if iteration % self.log_interval == 0 or iteration == self.total_steps:
            self._print_window(iteration)

    def _print_window(self, iteration: int) -> None:
        window, self._window = self._window, []
        if not window:
            return
        average = {name: sum(row.get(name, math.nan) for row in window) / len(window) for name in window[-1]}
        parts = [f"step {iteration}/{self.total_steps}", f"loss {average['loss']:.4f}", f"lr {window[-1]['lr']:.2e}"]
        if "grad_norm" in average:
            parts.append(f"grad norm {average['grad_norm']:.3f}")
        parts.append(f"{average['tokens_per_second']:,.0f} tok/s")
        if "mfu" in average:
            parts.append(f"MFU {100 * average['mfu']:.1f}%")
        parts.append(f"mem {average['memory_gib']:.2f} GiB")
        parts.append(f"{average['step_seconds']:.3f} s/step")
        known = {
            "loss",
            "lr",
            "grad_norm",
            "tokens_per_second",
            "mfu",
            "memory_gib",
            "step_seconds",
            "tokens",
            "skipped",
        }
        parts.extend(f"{name} {value:.4g}" for name, value in average.items() if name not in known)
        if any(row.get("skipped") for row in window):
            parts.append(f"skipped {sum(int(row.get('skipped', 0)) for row in window)}")
        log.info(" | ".join(parts))

    def record_evaluation(self, iteration: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(
            json.dumps({"step": iteration, **{f"validation_{k}": float(v) for k, v in values.items()}}) + "\n"
        )
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"validation/{name}", float(value), iteration)
        text = " | ".join(f"{name} {value:.4f}" for name, value in values.items())
        log.info(f"validation at step {iteration} | {text}")

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | Path) -> dict[int, dict[str, Any]]:
    """metrics.jsonl -> {step: row}; for a step logged twice (a resumed run), the last row wins.
    Validation rows are merged into their step's row."""
    rows: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            step = row.pop("step")
            if any(key.startswith("validation_") for key in row):
                rows.setdefault(step, {}).update(row)
            else:
                rows[step] = row
    return rows
