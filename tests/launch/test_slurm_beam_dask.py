"""launch/slurm/beam_dask.sbatch on a real one-node Slurm cluster (launch/slurm/local_cluster.sh,
as in test_slurm_cluster.py): one job starts a Dask scheduler and two workers (srun), runs prepare
and dedup against it on the embedded sample, and stops the cluster; its pool and near-dedup
outputs are those of the direct runner on the same WARC. Without Slurm: the dry run, and a bad
override that stops the job before any cluster starts.

CI runs as root with slurm-wlm and munge installed (.ci/run): the cluster test skips only where it
cannot run, and fails instead when $CI is set.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.beam_pipelines.test_dask_runner import stage_outputs
from tests.launch.slurm_support import KNOBS, SLURM_DIR
from tests.launch.test_slurm_cluster import cluster, read_logs  # noqa: F401  (the module's Slurm cluster)
from tests.support import REPO_ROOT, run_module, subprocess_env

SAMPLE = ["corpus.sample_max_math_pages=60", "corpus.sample_max_other_pages=60"]
JOB = {"NODES": "1", "TASKS_PER_NODE": "2", "CPUS_PER_TASK": "1", "TIME_LIMIT": "15", "JOB_NAME": "beam-dask"}


def script(arguments: list[str], cwd: Path, **knobs: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    for name in KNOBS:
        env.pop(name, None)
    env.update(VENV=sys.prefix, **knobs)
    return subprocess.run(
        ["bash", str(SLURM_DIR / "beam_dask.sbatch"), *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_prints_the_cluster_and_every_stage(tmp_path):
    result = script(
        ["--dry-run", "prepare,dedup", f"corpus.work_dir={tmp_path}/w"],
        tmp_path,
        NODES="2",
        TASKS_PER_NODE="4",
        DASK_MEMORY_PER_WORKER="3GB",
        DASK_PARTITIONS="32",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "stages: prepare dedup (configs composed and validated)"
    scheduler_file = f"{tmp_path}/logs/beam-dask-JOBID/dask/scheduler.json"
    workers = next(line for line in lines if line.startswith("workers: "))
    assert workers.startswith("workers: srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --cpus-per-task=1 ")
    assert f"-m dask worker --scheduler-file {scheduler_file} --nthreads 1 --memory-limit 3GB" in workers
    stages = [line for line in lines if line.startswith("stage: ")]
    assert [re.search(r"-m (\S+)", line).group(1) for line in stages] == [
        "beam_pipelines.prepare",
        "beam_pipelines.dedup",
    ]
    assert all(
        f"beam=dask beam.dask_scheduler_file={scheduler_file} beam.dask_partitions=32 corpus.work_dir={tmp_path}/w"
        in line
        for line in stages
    )
    assert not (tmp_path / "logs").exists(), "a dry run creates nothing"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["prepare,dedupe"], "error: unknown stage 'dedupe': use prepare, dedup, recall, decontaminate or tokenize"),
        (["dedup", "minhash.treshold=0.5"], "error: dedup: Could not override 'minhash.treshold'."),
    ],
)
def test_a_bad_stage_or_override_is_one_line(tmp_path, arguments, message):
    result = script(["--dry-run", *arguments], tmp_path, **JOB)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message), result.stderr


@pytest.mark.slurm
@pytest.mark.integration
def test_a_job_runs_prepare_and_dedup_on_its_own_dask_cluster(cluster, tmp_path):  # noqa: F811
    work, logs = tmp_path / "work", tmp_path / "logs"
    submitted = subprocess.run(
        ["bash", str(SLURM_DIR / "submit.sh"), "beam_dask", "prepare,dedup", f"corpus.work_dir={work}", *SAMPLE],
        cwd=tmp_path,
        env=cluster.env(LOG_ROOT=str(logs), **JOB),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"^submitted job (\d+);", submitted.stdout, re.MULTILINE).group(1)
    job = cluster.wait(job_id, logs, timeout=600)
    batch_log = (logs / f"beam-dask-{job_id}.log").read_text()
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), batch_log + read_logs(logs)

    dask_dir = logs / f"beam-dask-{job_id}" / "dask"
    assert "dask cluster up: tcp://" in batch_log and ", 2 worker(s)" in batch_log, batch_log
    assert sorted(p.name for p in dask_dir.glob("worker-*.log")) == ["worker-0.log", "worker-1.log"]
    assert batch_log.count("(runner: DaskRunner on scheduler file ") == 2, batch_log
    assert batch_log.rstrip().endswith("dask cluster stopped"), batch_log
    # Torn down: no scheduler or worker of this job is left on the host.
    leftovers = [
        process.info["pid"]
        for process in psutil.process_iter(["pid", "cmdline"])
        if str(dask_dir) in " ".join(process.info["cmdline"] or [])
    ]
    assert leftovers == []

    pool, dedup = (json.loads((work / d / "summary.json").read_text()) for d in ("pool", "pool_near_dedup"))
    assert pool["balanced"] and dedup["balanced"] and dedup["totals"]["in"] == pool["totals"]["kept"] > 50

    # The direct runner on the WARC the job built gives the same documents and counts.
    direct = tmp_path / "direct"
    warc = sorted((work / "sample").glob("*.warc.gz"))
    for stage, extra in (("prepare", [f"corpus.warc_inputs=[{','.join(map(str, warc))}]"]), ("dedup", [])):
        result = run_module(
            f"beam_pipelines.{stage}",
            f"corpus.work_dir={direct}",
            "beam=direct_single",
            f"hydra.run.dir={tmp_path}/hydra-{stage}",
            *extra,
            cwd=REPO_ROOT,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    for stage_dir in ("pool", "pool_near_dedup"):
        assert stage_outputs(work / stage_dir) == stage_outputs(direct / stage_dir), stage_dir
