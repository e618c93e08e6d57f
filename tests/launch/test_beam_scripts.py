"""launch/beam submission scripts for the pipelines other than prepare (which
tests/beam_pipelines/test_config.py covers): each composes a valid config for its runner with
the environment knobs translated into `beam.*` overrides. `--cfg job` prints the composition
instead of submitting, so no cluster is contacted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, subprocess_env

BEAM_DIR = REPO_ROOT / "launch" / "beam"
CLUSTERS = {
    "GCP_PROJECT": "proj",
    "GCP_REGION": "europe-west4",
    "GCS_BUCKET": "bucket",
    "FLINK_MASTER": "jm:8081",
    "SPARK_MASTER_URL": "spark://master:7077",
    "DASK_SCHEDULER_ADDRESS": "tcp://scheduler:8786",
}


def submit(runner: str, pipeline: str, *overrides: str, **knobs: str) -> subprocess.CompletedProcess:
    env = subprocess_env(PYTHON=sys.executable)
    for name in (
        *CLUSTERS,
        "FLINK_JOB_SERVER_JAR",
        "FLINK_PARALLELISM",
        "SPARK_JOB_SERVER_JAR",
        "DASK_SCHEDULER_FILE",
        "DASK_PARTITIONS",
    ):
        env.pop(name, None)
    env.update(knobs)
    return subprocess.run(
        ["bash", str(BEAM_DIR / f"{runner}.sh"), pipeline, *overrides, "--cfg", "job"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "runner, pipeline, overrides, expected",
    [
        (
            "flink",
            "dedup",
            ["minhash.threshold=0.7"],
            [
                "runner: flink",
                "flink_master: jm:8081",
                "flink_job_server_jar: /opt/flink-js.jar",
                "parallelism: 32",
                "threshold: 0.7",
            ],
        ),
        (
            "dataflow",
            "recall",
            ["training.seed_positives=[gs://bucket/owm/*.parquet]"],
            ["runner: dataflow", "project: proj", "temp_location: gs://bucket/beam-tmp", "- gs://bucket/owm/*.parquet"],
        ),
        (
            "spark",
            "decontaminate",
            [],
            ["runner: spark", "spark_master_url: spark://master:7077", "spark_job_server_jar: /opt/spark-js.jar"],
        ),
        (
            "dask",
            "recall",
            ["training.seed_positives=[/shared/owm/*.parquet]"],
            ["runner: dask", "dask_scheduler_address: tcp://scheduler:8786", "dask_partitions: 48"],
        ),
        (
            "dataflow",
            "tokenize",
            ["source=arxiv", "source.input=gs://bucket/arxiv/*.jsonl.zst"],
            ["runner: dataflow", "machine_type: n2-standard-8", "name: arxiv", "input: gs://bucket/arxiv/*.jsonl.zst"],
        ),
    ],
)
def test_every_pipeline_composes_for_its_runner(tmp_path, runner, pipeline, overrides, expected):
    result = submit(
        runner,
        pipeline,
        f"hydra.run.dir={tmp_path}",
        *overrides,
        **CLUSTERS,
        FLINK_JOB_SERVER_JAR="/opt/flink-js.jar",
        FLINK_PARALLELISM="32",
        SPARK_JOB_SERVER_JAR="/opt/spark-js.jar",
        DASK_PARTITIONS="48",
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    # The command it runs is echoed first, with the pipeline's own entry point.
    assert result.stderr.startswith(f"+ {sys.executable} -m beam_pipelines.{pipeline} beam={runner} ")


@pytest.mark.parametrize(
    "runner, knob",
    [
        ("flink", "FLINK_MASTER"),
        ("spark", "SPARK_MASTER_URL"),
        ("dataflow", "GCP_PROJECT"),
        ("dask", "DASK_SCHEDULER_ADDRESS"),
    ],
)
def test_a_missing_cluster_knob_is_named(runner, knob):
    knobs = {name: value for name, value in CLUSTERS.items() if name != knob}
    result = submit(runner, "dedup", **knobs)
    assert result.returncode != 0
    assert knob in result.stderr and "beam_pipelines" not in result.stderr
