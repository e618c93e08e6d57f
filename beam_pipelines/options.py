"""Hydra `beam` config -> Beam PipelineOptions for the direct, Dask, Dataflow, Flink and Spark runners.

`render_pipeline_args(config)` gives the command-line flags (tested for every preset against the
installed Beam's own parser: `unaccepted_pipeline_args`); `pipeline_options(config)` wraps them
and refuses flags Beam would reject or drop; `describe_runner(config)` names the runner for the
stages' progress lines. Notes that shaped the choices:
- `direct` renders Beam's in-process portable runner (`FnApiRunner`): the plain DirectRunner
  first tries the Prism runner, which downloads a Go binary at run time (offline it fails, online
  it bypasses our multi-processing settings). FnApiRunner honours
  `--direct_running_mode=multi_processing --direct_num_workers=N`.
- `dask` renders our runner (beam_pipelines/runners/dask.py) with Beam's DaskRunner flags; it
  needs a running scheduler (launch/beam/dask.sh, launch/slurm/beam_dask.sbatch).
- Remote runners need this project on their workers: `package_project` ships it as an sdist
  built from `setup.py` (`--setup_file`), next to `requirements_file` / `extra_packages`.
- Flink and Spark download a job-server jar from Maven unless given one (`flink_job_server_jar`,
  `spark_job_server_jar`) or a running job server (`job_endpoint`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from beam_pipelines.config import BeamConfig, ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DASK_RUNNER = "beam_pipelines.runners.dask.DaskRunner"


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else ""
    return f"--{name}={value}"


def render_pipeline_args(config: BeamConfig, job_name: str | None = None) -> list[str]:
    """The PipelineOptions flags for `config`, in a stable order."""
    args: list[str] = []

    def add(name: str, value) -> None:
        if value is None or value == "" or value == []:
            return
        if isinstance(value, list):
            for item in value:
                args.append(f"--{name}={item}")
            return
        flag = _flag(name, value)
        if flag:
            args.append(flag)

    name = config.job_name or job_name
    if config.runner == "direct":
        add("runner", "FnApiRunner")
        add("direct_running_mode", config.direct_running_mode)
        add("direct_num_workers", config.direct_num_workers or os.cpu_count() or 1)
    elif config.runner == "dask":
        add("runner", DASK_RUNNER)
        add("dask_client_address", config.dask_scheduler_address)
        add("dask_scheduler_file", config.dask_scheduler_file)
        add("dask_npartitions", config.dask_partitions or None)
    elif config.runner == "dataflow":
        add("runner", "DataflowRunner")
        add("job_name", _dataflow_job_name(name) if name else None)
        for option in (
            "project",
            "region",
            "temp_location",
            "staging_location",
            "machine_type",
            "num_workers",
            "max_num_workers",
            "disk_size_gb",
            "service_account_email",
            "network",
            "subnetwork",
            "sdk_container_image",
        ):
            add(option, getattr(config, option))
        if config.use_public_ips is not None:
            args.append("--use_public_ips" if config.use_public_ips else "--no_use_public_ips")
        add("dataflow_service_options", list(config.dataflow_service_options))
    elif config.runner == "flink":
        add("runner", "FlinkRunner")
        add("job_name", name)
        add("flink_master", config.flink_master)
        add("flink_version", config.flink_version)
        add("flink_job_server_jar", config.flink_job_server_jar)
        add("parallelism", config.parallelism)
    elif config.runner == "spark":
        add("runner", "SparkRunner")
        add("job_name", name)
        add("spark_master_url", config.spark_master_url)
        add("spark_job_server_jar", config.spark_job_server_jar)
        add("spark_version", config.spark_version)
    if config.runner in ("flink", "spark"):
        add("job_endpoint", config.job_endpoint)
        add("environment_type", config.environment_type.upper() if config.environment_type else None)
        add("environment_config", config.environment_config)
        add("sdk_container_image", config.sdk_container_image)
    if config.package_project:
        add("setup_file", str(PROJECT_ROOT / "setup.py"))
    add("requirements_file", config.requirements_file)
    add("extra_package", list(config.extra_packages))
    args.extend(config.extra_options)
    return args


def _dataflow_job_name(name: str) -> str:
    # Dataflow job names: lower-case letters, digits and hyphens, starting with a letter.
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return cleaned if cleaned[:1].isalpha() else f"job-{cleaned}"


def unaccepted_pipeline_args(args: list[str]) -> list[str]:
    """The flags among `args` that the installed Beam's option parser rejects or would drop (an
    unknown flag, an invalid choice), each with the reason; empty when Beam takes them all."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    if any(arg.startswith("--dask_") for arg in args):
        # Registers Beam's DaskOptions (imports dask.distributed: only when asked for).
        import apache_beam.runners.dask.dask_runner  # noqa: F401

    problems: list[str] = []
    for arg in args:
        parser = _BeamArgumentParser(allow_abbrev=False, exit_on_error=False)
        for options_class in PipelineOptions.__subclasses__():
            options_class._add_argparse_args(parser)
        try:
            _, unknown = parser.parse_known_args([arg])
        except argparse.ArgumentError as error:
            problems.append(f"{arg}: {error}")
            continue
        if unknown:
            problems.append(f"{arg}: not a flag of apache-beam's PipelineOptions")
    return problems


def pipeline_options(config: BeamConfig, job_name: str | None = None):
    from apache_beam.options.pipeline_options import PipelineOptions

    args = render_pipeline_args(config, job_name)
    problems = unaccepted_pipeline_args(args)
    if problems:
        raise ConfigError(f"beam={config.runner}: the installed apache-beam does not accept {'; '.join(problems)}")
    return PipelineOptions(args)


def describe_runner(config: BeamConfig) -> str:
    """The runner a stage really uses, for its `[stage] ... (runner: ...)` line."""
    if config.runner == "direct":
        workers = config.direct_num_workers or os.cpu_count() or 1
        return f"FnApiRunner, {config.direct_running_mode}, {workers} worker(s)"
    if config.runner == "dask":
        where = config.dask_scheduler_address or f"scheduler file {config.dask_scheduler_file}"
        return f"DaskRunner on {where}"
    if config.runner == "dataflow":
        return f"DataflowRunner, project {config.project} in {config.region}"
    if config.runner == "flink":
        return f"FlinkRunner on {config.flink_master or config.job_endpoint}"
    return f"SparkRunner on {config.spark_master_url or config.job_endpoint}"
