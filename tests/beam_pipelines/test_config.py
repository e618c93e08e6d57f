"""Every conf/ composition of the corpus entry points composes, renders options, and a bad
override fails before any work with one line."""

import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from beam_pipelines.config import PrepareConfig, register_configs
from beam_pipelines.options import render_pipeline_args
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT, run_module, subprocess_env

BEAM_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "beam").glob("*.yaml"))
CORPUS_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "corpus").glob("*.yaml"))
REQUIRED = {
    "dataflow": ["beam.project=my-project", "beam.region=us-central1", "beam.temp_location=gs://bucket/tmp"],
    "flink": ["beam.flink_master=flink-jm:8081"],
    "spark": ["beam.spark_master_url=spark://spark-master:7077"],
}


@pytest.mark.parametrize("beam_preset", BEAM_PRESETS)
@pytest.mark.parametrize("corpus_preset", CORPUS_PRESETS)
def test_every_prepare_composition(beam_preset, corpus_preset):
    config = compose_config(
        "prepare", [f"beam={beam_preset}", f"corpus={corpus_preset}", *REQUIRED.get(beam_preset, [])], register_configs
    )
    assert isinstance(config, PrepareConfig)
    assert config.output_dir == f"{config.corpus.work_dir}/pool"
    assert render_pipeline_args(config.beam, "prepare")


def test_direct_preset_never_uses_prism():
    config = compose_config("prepare", [], register_configs)
    args = render_pipeline_args(config.beam)
    assert "--runner=FnApiRunner" in args
    assert "--direct_running_mode=multi_processing" in args
    assert any(a.startswith("--direct_num_workers=") and int(a.split("=")[1]) >= 1 for a in args)


def test_dataflow_options_include_worker_packaging():
    config = compose_config(
        "prepare", ["beam=dataflow", *REQUIRED["dataflow"], "beam.requirements_file=req.txt"], register_configs
    )
    args = render_pipeline_args(config.beam, "prepare_Run")
    assert "--runner=DataflowRunner" in args
    assert "--project=my-project" in args and "--region=us-central1" in args
    assert "--temp_location=gs://bucket/tmp" in args
    assert "--job_name=prepare-run" in args
    assert any(a.startswith("--setup_file=") and a.endswith("setup.py") for a in args)
    assert "--requirements_file=req.txt" in args
    assert "--no_use_public_ips" in args


def test_flink_and_spark_render_portable_options():
    flink = render_pipeline_args(
        compose_config(
            "prepare", ["beam=flink", *REQUIRED["flink"], "beam.flink_job_server_jar=/opt/js.jar"], register_configs
        ).beam
    )
    assert "--runner=FlinkRunner" in flink and "--flink_master=flink-jm:8081" in flink
    assert "--flink_job_server_jar=/opt/js.jar" in flink and "--environment_type=PROCESS" in flink
    spark = render_pipeline_args(compose_config("prepare", ["beam=spark", *REQUIRED["spark"]], register_configs).beam)
    assert "--runner=SparkRunner" in spark and "--spark_master_url=spark://spark-master:7077" in spark


def test_rendered_options_are_accepted_by_beam():
    args = render_pipeline_args(
        compose_config("prepare", ["beam=dataflow", *REQUIRED["dataflow"]], register_configs).beam
    )
    options = PipelineOptions(args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(GoogleCloudOptions).project == "my-project"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["beam.runner=nope"], "beam.runner='nope' is not one of"),
        (["beam=dataflow"], "beam=dataflow needs beam.project"),
        (["quality.min_words=lots"], "quality.min_words"),
        (["no_such_key=1"], "no_such_key"),
        (["beam=nonexistent_preset"], "nonexistent_preset"),
    ],
)
def test_bad_overrides_fail_with_one_clear_error(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_config("prepare", overrides, register_configs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_override_on_the_command_line_is_one_line_and_exit_2():
    result = run_module("beam_pipelines.prepare", "beam.runner=nope", timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: beam.runner='nope' is not one of direct, dataflow, flink, spark"], result.stderr


def test_missing_input_is_one_line(tmp_path):
    result = run_module(
        "beam_pipelines.prepare",
        f"corpus.warc_inputs=[{tmp_path}/nothing/*.warc.gz]",
        f"corpus.work_dir={tmp_path}/w",
        f"hydra.run.dir={tmp_path}/hydra",
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: input ") and "matches no file" in lines[0], result.stderr


def test_beam_submission_scripts_validate_and_print_the_command(tmp_path):
    """The launch/beam scripts compose a valid config: run them with --cfg job (no submission)."""
    env = subprocess_env(
        PYTHON=sys.executable,
        GCP_PROJECT="p",
        GCP_REGION="europe-west4",
        GCS_BUCKET="b",
        FLINK_MASTER="jm:8081",
        SPARK_MASTER_URL="spark://m:7077",
    )
    for script, expected in (
        ("dataflow", "runner: dataflow"),
        ("flink", "flink_master: jm:8081"),
        ("spark", "spark_master_url: spark://m:7077"),
    ):
        result = subprocess.run(
            [
                "bash",
                str(REPO_ROOT / "launch" / "beam" / f"{script}.sh"),
                "prepare",
                f"hydra.run.dir={tmp_path}",
                "--cfg",
                "job",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
    usage = subprocess.run(
        ["bash", str(REPO_ROOT / "launch" / "beam" / "dataflow.sh")], env=env, capture_output=True, text=True
    )
    assert usage.returncode == 2 and "usage:" in usage.stderr
