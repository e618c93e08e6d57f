"""Console logging of every `python -m ...` command, set up once by the entry-point wrapper
(stack_common.cli.hydra_entry_point): modules log through `logging.getLogger(...)`, never `print`.

Two console layouts; each entry point names its own:
- `PIPELINE_CONSOLE` (the corpus pipelines, evaluate): on stdout, an INFO line is the message
  alone, so a progress line reads `[prepare] pool: /data/run1/pool/documents/*.parquet`
  (launch/local/chain.py shows the lines that start with `[<step>] `); warnings and errors carry
  their level and logger. stderr stays free for the one-line `error: ...`.
- `TRAINING_CONSOLE` (pretrain, SFT, GRPO, convert): `time LEVEL logger: message` on stderr.
Rank 0 (RANK, else SLURM_PROCID) logs INFO; other ranks only warnings and errors, so a
multi-process run prints its progress once. Libraries log warnings and errors only.
Hydra's job log file (`<hydra.run.dir>/<job>.log`) keeps receiving every record.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class ConsoleLayout:
    stream: str  # stdout | stderr
    timestamps: bool


PIPELINE_CONSOLE = ConsoleLayout("stdout", timestamps=False)
TRAINING_CONSOLE = ConsoleLayout("stderr", timestamps=True)

TIMESTAMPED_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Chatty at INFO; their warnings still show.
QUIET_LIBRARIES = ("apache_beam", "absl", "urllib3", "matplotlib", "numexpr", "torch.distributed.elastic", "megatron")


class _DropBenignBeamNoise(logging.Filter):
    # The portable runner relays each local worker's start-up and shutdown chatter (and a
    # warning about a directory that only exists on remote workers) as WARN/INFO lines; Beam's
    # import warns on the root logger that the GCP client libraries are absent (they come with the
    # `dataflow` extra, which only Dataflow runs need).
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "semi_persistent_directory" not in message and not message.startswith("apitools not found")


class _ProgressFormatter(logging.Formatter):
    """INFO lines as they are; warnings and errors say what and where."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname} {record.name}: {text}" if record.levelno >= logging.WARNING else text


def process_rank() -> int:
    """This process's global rank under torchrun or srun (0 when launched alone)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def quiet_library_logs() -> None:
    """Keep the console for our own progress lines: libraries log warnings and errors only."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # megatron-core says at import, in five UserWarnings, that Transformer Engine and Apex are absent:
    # the expected set-up without them (models/llama.py logs the layer spec it picks, and why), and
    # on stderr it would precede a command's one-line `error: ...`.
    warnings.filterwarnings("ignore", "(Transformer Engine and Apex are|Apex is) not installed", UserWarning)
    for name in ("apache_beam.runners.portability.local_job_service", ""):
        beam_logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropBenignBeamNoise) for existing in beam_logger.filters):
            beam_logger.addFilter(_DropBenignBeamNoise())


def configure_logging(layout: ConsoleLayout = TRAINING_CONSOLE) -> None:
    """Route the root logger to one console handler in `layout` (replacing Hydra's console
    handler, keeping its job log file); INFO on rank 0, WARNING elsewhere."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stdout if layout.stream == "stdout" else sys.stderr)
    console.setFormatter(logging.Formatter(TIMESTAMPED_FORMAT) if layout.timestamps else _ProgressFormatter())
    root.addHandler(console)
    root.setLevel(logging.INFO if process_rank() == 0 else logging.WARNING)
    quiet_library_logs()
