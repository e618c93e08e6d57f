"""The Slurm scripts without a cluster: --dry-run composes and validates the recipe's config the
way the job will (one line on a bad override), and prints the launch and the sbatch command the
environment knobs produce. Every call is a real bash + Python subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch.slurm_support import KNOBS, SLURM_DIR
from tests.support import REPO_ROOT, subprocess_env

TINY = [
    "model=tiny",
    "model.vocab_size=256",
    "data=mock",
    "data.seq_length=64",
    "trainer=cpu",
    "trainer.global_batch_size=4",
    "trainer.micro_batch_size=2",
]
CPU_JOB = {"GPUS_PER_NODE": "0", "TASKS_PER_NODE": "2", "CPUS_PER_TASK": "1"}


def run_script(command: list[str], cwd: Path, **knobs: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    for name in KNOBS:  # only what the test sets
        env.pop(name, None)
    env.update(VENV=sys.prefix, **knobs)
    return subprocess.run(["bash", *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def submit_dry_run(tmp_path: Path, recipe: str, *overrides: str, **knobs: str) -> subprocess.CompletedProcess:
    return run_script([str(SLURM_DIR / "submit.sh"), recipe, "--dry-run", *overrides], tmp_path, **knobs)


def line(output: str, prefix: str) -> str:
    found = [text for text in output.splitlines() if text.startswith(prefix)]
    assert len(found) == 1, output
    return found[0]


def test_dry_run_prints_the_srun_launch_and_the_sbatch_command_from_the_knobs(tmp_path):
    result = submit_dry_run(
        tmp_path,
        "pretrain",
        *TINY,
        "parallelism=tp2",
        "trainer.global_batch_size=16",
        "trainer.train_steps=70",
        NODES="2",
        GPUS_PER_NODE="4",
        CPUS_PER_TASK="6",
        TIME_LIMIT="02:00:00",
        PARTITION="gpu",
        ACCOUNT="math",
        QOS="high",
        JOB_NAME="dsm",
        PREEMPT_WARNING_SECONDS="120",
        OUTPUT_DIR=str(tmp_path / "run"),
        EXTRA_SBATCH_ARGS="--exclusive --constraint=h100",
    )
    assert result.returncode == 0, result.stderr
    launch = line(result.stdout, "launch: ")
    # One rank per GPU (TASKS_PER_NODE follows GPUS_PER_NODE), the overrides passed on unchanged.
    assert "srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --cpus-per-task=6 " in launch
    assert launch.endswith("parallelism=tp2 trainer.global_batch_size=16 trainer.train_steps=70")
    assert "rank_exec.sh python -m megatron_recipes.pretrain " in launch
    assert f"trainer.output_dir={tmp_path / 'run'}" in launch
    submit = line(result.stdout, "submit: ")
    for option in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=6",
        "--time=02:00:00",
        "--partition=gpu",
        "--account=math",
        "--qos=high",
        "--job-name=dsm",
        "--signal=USR1@120",
        "--exclusive",
        "--constraint=h100",
        f"--output={tmp_path}/logs/%x-%j.log",
    ):
        assert f" {option} " in submit, (option, submit)
    assert submit.split()[1:].count("--nodes=2") == 1
    assert f"{SLURM_DIR}/pretrain.sbatch model=tiny" in submit
    assert line(result.stdout, "checkpoints: ").startswith(f"checkpoints: {tmp_path / 'run' / 'checkpoints'} ")
    assert line(result.stdout, "logs: ") == f"logs: {tmp_path}/logs/dsm-JOBID/rank-<rank>.log"


def test_dry_run_of_the_torchrun_launcher_rendezvous_and_signal_forwarding(tmp_path):
    result = run_script(
        [str(SLURM_DIR / "pretrain.sbatch"), "--dry-run", *TINY, "trainer.global_batch_size=12"],
        tmp_path,
        **CPU_JOB,
        NODES="3",
        LAUNCHER="torchrun",
        RDZV_PORT="29400",
    )
    assert result.returncode == 0, result.stderr
    launch = line(result.stdout, "launch: ")
    # One torchrun per node holding all of that node's CPUs; c10d rendezvous on the first node.
    assert "srun --nodes=3 --ntasks=3 --ntasks-per-node=1 --cpus-per-task=2 " in launch
    assert "--nnodes=3 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=\\<first\\ node\\>:29400" in launch
    assert "--signals-to-handle=SIGTERM\\,SIGINT\\,SIGHUP\\,SIGQUIT\\,SIGUSR1" in launch
    assert "--no-python " in launch and "rank_exec.sh python -m megatron_recipes.pretrain" in launch


def test_the_parallel_layout_is_checked_against_the_ranks_the_job_will_start(tmp_path):
    fits = submit_dry_run(tmp_path, "pretrain", *TINY, "parallelism=tp2", **CPU_JOB)
    assert fits.returncode == 0, fits.stderr
    too_few = submit_dry_run(tmp_path, "pretrain", *TINY, "parallelism=tp2", **{**CPU_JOB, "TASKS_PER_NODE": "1"})
    assert too_few.returncode == 2
    assert too_few.stderr.strip().splitlines() == [
        "error: world size 1 is not divisible by tensor_model_parallel_size x pipeline_model_parallel_size = 2x1"
    ]
    assert "submit:" not in too_few.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["trainer.train_stepz=3"], "error: Could not override 'trainer.train_stepz'"),
        (["trainer.train_steps=many"], "error: Error merging override trainer.train_steps=many"),
        (["model=no_such_model"], "error: In 'pretrain': Could not find 'model/no_such_model'"),
    ],
)
def test_a_bad_override_is_one_line_before_anything_is_queued(tmp_path, arguments, message):
    commands = [[str(SLURM_DIR / "submit.sh"), "pretrain", *TINY, *arguments]]
    if arguments == ["trainer.train_stepz=3"]:  # the job script's own dry run says the same
        commands.append([str(SLURM_DIR / "pretrain.sbatch"), "--dry-run", *TINY, *arguments])
    for command in commands:
        result = run_script(command, tmp_path, **CPU_JOB)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.stderr
        assert "submitted" not in result.stdout


def test_missing_pretraining_data_fails_at_submission_unless_told_not_to_look(tmp_path):
    overrides = ["+experiment=tiny_cpu", f"corpus.work_dir={tmp_path}/corpus"]
    missing = submit_dry_run(tmp_path, "pretrain", *overrides, **CPU_JOB)
    assert missing.returncode == 2
    assert re.fullmatch(
        r"error: data source math_corpus: \S+/corpus/tokenized/math_corpus is neither a dataset prefix"
        r" \(\.bin \+ \.idx\) nor a directory\n",
        missing.stderr,
    ), missing.stderr
    unchecked = submit_dry_run(tmp_path, "pretrain", *overrides, **CPU_JOB, CHECK_DATA="0")
    assert unchecked.returncode == 0, unchecked.stderr


def test_an_override_on_the_command_line_wins_over_the_output_dir_knob(tmp_path):
    result = submit_dry_run(
        tmp_path, "pretrain", *TINY, f"trainer.output_dir={tmp_path}/mine", **CPU_JOB, OUTPUT_DIR=str(tmp_path / "knob")
    )
    assert result.returncode == 0, result.stderr
    assert line(result.stdout, "outputs: ") == f"outputs: {tmp_path}/mine"


def test_evaluate_runs_one_task_without_preemption_or_requeue(tmp_path):
    result = submit_dry_run(tmp_path, "evaluate", "generator.path=gens.jsonl", OUTPUT_DIR=str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    assert "srun --nodes=1 --ntasks=1 --ntasks-per-node=1 " in line(result.stdout, "launch: ")
    assert line(result.stdout, "outputs: ") == f"outputs: {tmp_path}/eval"
    assert "checkpoints:" not in result.stdout
    submit = line(result.stdout, "submit: ")
    assert "--signal" not in submit
    evaluate_script = (SLURM_DIR / "evaluate.sbatch").read_text()
    assert "#SBATCH --requeue" not in evaluate_script and "#SBATCH --signal" not in evaluate_script


@pytest.mark.parametrize("recipe", ["sft", "grpo"])
def test_post_training_scripts_dry_run_once_their_entry_point_exists(tmp_path, recipe):
    available = (
        importlib.util.find_spec(f"megatron_recipes.{recipe}") and (REPO_ROOT / "conf" / f"{recipe}.yaml").exists()
    )
    # The CPU demos of the post-training recipes (SFT needs its data named; it is read at run time).
    demo = (
        {
            "sft": ["+experiment=sft_tiny_cpu", f"sft_data.paths=[{tmp_path}/sft.jsonl]"],
            "grpo": ["+experiment=grpo_tiny_cpu"],
        }[recipe]
        if available
        else []
    )
    result = run_script([str(SLURM_DIR / f"{recipe}.sbatch"), "--dry-run", *demo], tmp_path, **CPU_JOB)
    if available:
        assert result.returncode == 0, result.stderr
        assert f"-m megatron_recipes.{recipe} " in line(result.stdout, "launch: ")
        assert line(result.stdout, "checkpoints: ").startswith(
            f"checkpoints: {tmp_path}/outputs/{recipe}/tiny_cpu/checkpoints "
        )
    else:  # the entry point is being written: the script says so in one line
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() in (
            [f"error: megatron_recipes.{recipe} is not in this checkout (recipes: pretrain, sft, grpo, evaluate)"],
            [f"error: conf/{recipe}.yaml is not in this checkout"],
        )


@pytest.mark.parametrize("recipe", ["pretrain", "sft", "grpo"])
def test_training_scripts_requeue_and_take_the_preemption_warning(recipe):
    text = (SLURM_DIR / f"{recipe}.sbatch").read_text()
    for directive in (
        "#SBATCH --requeue",
        "#SBATCH --signal=USR1@",
        "#SBATCH --open-mode=append",
        f"#SBATCH --job-name={recipe}",
        f'run_recipe {recipe} "$@"',
    ):
        assert directive in text, directive


def test_launching_outside_a_job_without_dry_run_is_refused(tmp_path):
    result = run_script([str(SLURM_DIR / "pretrain.sbatch"), *TINY], tmp_path, **CPU_JOB)
    assert result.returncode == 2
    assert result.stderr.startswith("error: not inside a Slurm job: submit with launch/slurm/submit.sh pretrain")


def test_unknown_recipe_and_launcher_are_refused(tmp_path):
    unknown = run_script([str(SLURM_DIR / "submit.sh"), "pretrian"], tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("usage: ")
    launcher = submit_dry_run(tmp_path, "pretrain", *TINY, **CPU_JOB, LAUNCHER="mpirun")
    assert launcher.returncode == 2
    assert (
        launcher.stderr.strip()
        == "error: LAUNCHER=mpirun: use srun (one task per GPU) or torchrun (one torchrun per node)"
    )


def test_scripts_are_valid_bash_and_executable():
    for path in [*SLURM_DIR.glob("*.sbatch"), *SLURM_DIR.glob("*.sh")]:
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, path
        if path.name != "common.sh":
            assert os.access(path, os.X_OK), f"{path} is not executable"


@pytest.mark.parametrize(
    "overrides, knobs, message",
    [
        (
            ["trainer.exit_signals=[SIGTERM]"],
            {},
            "error: PREEMPT_SIGNAL=USR1 is not among the trainer's exit signals (SIGTERM)",
        ),
        (
            ["trainer.exit_signal_handler=false"],
            {"PREEMPT_SIGNAL": "B:USR1"},
            "error: PREEMPT_SIGNAL=USR1 is not among the trainer's exit signals (none, "
            "trainer.exit_signal_handler=false)",
        ),
    ],
)
def test_a_preemption_signal_the_trainer_would_die_of_is_refused(tmp_path, overrides, knobs, message):
    result = submit_dry_run(tmp_path, "pretrain", *TINY, *overrides, **CPU_JOB, **knobs)
    assert result.returncode == 2
    assert result.stderr.strip() == f"{message}: add it to trainer.exit_signals"


def test_another_preemption_signal_reaches_sbatch_and_torchrun(tmp_path):
    result = submit_dry_run(
        tmp_path,
        "pretrain",
        *TINY,
        "trainer.exit_signals=[SIGTERM,SIGUSR2]",
        **CPU_JOB,
        PREEMPT_SIGNAL="USR2",
        PREEMPT_WARNING_SECONDS="90",
        LAUNCHER="torchrun",
    )
    assert result.returncode == 0, result.stderr
    assert "--signals-to-handle=SIGTERM\\,SIGINT\\,SIGHUP\\,SIGQUIT\\,SIGUSR2 " in line(result.stdout, "launch: ")
    assert " --signal=USR2@90 " in line(result.stdout, "submit: ")
