"""The shared command-line layer (stack_common.cli, stack_common.logs): what an entry point's
`main` returns or raises becomes the process's exit status, config errors are answered in one
line, and logging is set up once, in the layout the entry point names."""

from __future__ import annotations

import json
import logging

import pytest

from beam_pipelines.config import register_configs
from stack_common.cli import hydra_entry_point
from stack_common.errors import ConfigError
from stack_common.logs import PIPELINE_CONSOLE, TRAINING_CONSOLE, configure_logging
from tests.support import run_module


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def run_entry(main, tmp_path, **options) -> int:
    """Call `main` through the wrapper (the prepare config: any composition works); its exit status."""
    entry = hydra_entry_point("prepare", register_configs, **options)(main)
    try:
        entry([f"hydra.run.dir={tmp_path / 'hydra'}"])
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.parametrize("returned, status", [(None, 0), (0, 0), (75, 75), (True, 0)])
def test_an_int_returned_by_main_becomes_the_exit_status(tmp_path, restore_root_logger, returned, status):
    seen = []

    def main(config):
        seen.append(type(config).__name__)
        return returned

    assert run_entry(main, tmp_path) == status
    assert seen == ["PrepareConfig"]  # the typed config object, not a DictConfig


@pytest.mark.parametrize(
    "error, line",
    [
        (ConfigError("input_dir='x' has no documents"), "error: input_dir='x' has no documents"),
        (FileNotFoundError("no such file: /data/x.warc.gz"), "error: no such file: /data/x.warc.gz"),
        (KeyError("gens.jsonl has no generations for 'p1'"), "error: gens.jsonl has no generations for 'p1'"),
    ],
)
def test_user_errors_raised_by_main_are_one_line_and_status_2(tmp_path, capsys, restore_root_logger, error, line):
    def main(config):
        raise error

    assert run_entry(main, tmp_path, user_errors=(KeyError,)) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_other_errors_are_bugs_status_1_not_a_one_line_answer(tmp_path, capsys, restore_root_logger):
    def main(config):
        raise KeyError("a bug")

    # KeyError is a user error only where the entry point says so; Hydra reports a bug (status 1).
    assert run_entry(main, tmp_path) == 1
    assert not capsys.readouterr().err.startswith("error: ")


def test_a_bad_override_fails_before_main_runs(tmp_path, capsys):
    called = []
    entry = hydra_entry_point("prepare", register_configs)(called.append)
    with pytest.raises(SystemExit) as stop:
        entry(["beam.runner=nope", f"hydra.run.dir={tmp_path}"])
    assert stop.value.code == 2 and called == []
    assert capsys.readouterr().err.splitlines() == [
        "error: beam.runner='nope' is not one of direct, dask, dataflow, flink, spark"
    ]
    assert not (tmp_path / ".hydra").exists()


def test_pipeline_layout_prints_progress_lines_as_they_are(capsys, restore_root_logger):
    configure_logging(PIPELINE_CONSOLE)
    logging.getLogger("prepare").info("[prepare] pool: %s", "/data/pool/documents/*.parquet")
    logging.getLogger("apache_beam.runners").info("worker chatter")  # libraries: warnings only
    logging.getLogger("recall").warning("[recall] fastText diverged")
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "[prepare] pool: /data/pool/documents/*.parquet",
        "WARNING recall: [recall] fastText diverged",
    ]
    assert captured.err == ""


def test_training_layout_is_timestamped_on_stderr_and_quiet_off_rank_0(capsys, monkeypatch, restore_root_logger):
    configure_logging(TRAINING_CONSOLE)
    logging.getLogger("megatron_recipes.train").info("step 1/2 | loss 3.0")
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.endswith(" INFO megatron_recipes.train: step 1/2 | loss 3.0") and line[:4].isdigit()

    monkeypatch.setenv("RANK", "1")
    configure_logging(TRAINING_CONSOLE)
    logging.getLogger("megatron_recipes.train").info("step 2/2 | loss 2.0")
    logging.getLogger("megatron_recipes.train").warning("rank 1 is slow")
    assert [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()] == [
        "WARNING megatron_recipes.train: rank 1 is slow"
    ]
    assert len([h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler)]) == 1


@pytest.mark.integration
def test_a_training_run_stopped_by_its_time_budget_exits_with_the_signal_exit_code(tmp_path):
    """End to end: pretrain's main returns the outcome's exit code (75, what launchers requeue on)."""
    result = run_module(
        "megatron_recipes.pretrain",
        "trainer=cpu",
        "data=mock",
        "model=tiny",
        "model.vocab_size=256",
        "data.seq_length=32",
        "trainer.global_batch_size=2",
        "trainer.micro_batch_size=2",
        "trainer.train_steps=50",
        "trainer.exit_duration_minutes=1e-6",  # spent after the first step
        "trainer.tensorboard=false",
        f"trainer.output_dir={tmp_path / 'run'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        timeout=600,
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 75, result.stderr[-3000:]
    status = json.loads((tmp_path / "run" / "checkpoints" / "exit_status.json").read_text())
    assert (status["reason"], status["exit_code"]) == ("duration", 75)
    assert status["checkpoint"] == str(tmp_path / "run" / "checkpoints" / f"iter_{status['iteration']:07d}")
