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
from dataclasses import dataclass, field
from pathlib import Path

from stack_common.checks import require_choice, require_non_negative
from stack_common.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DASK_RUNNER = "beam_pipelines.runners.dask.DaskRunner"

RUNNERS = ("direct", "dask", "dataflow", "flink", "spark")
DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "LOOPBACK", "EXTERNAL")


@dataclass
class BeamConfig:
    """The `beam` section: where and how a Beam pipeline runs (presets in conf/beam/); rendered to
    PipelineOptions below."""

    runner: str = "direct"
    job_name: str | None = None
    # direct: the in-process portable runner (never the Prism download); 0 workers = all cores.
    direct_num_workers: int = 0
    direct_running_mode: str = "multi_processing"
    # dask: a running dask.distributed scheduler (address or scheduler file, one of the two) and
    # the partitions of each shuffle, Create and Read (0: twice the cluster's worker threads, or
    # one per 32 MiB the pipeline reads when that is more).
    dask_scheduler_address: str | None = None
    dask_scheduler_file: str | None = None
    dask_partitions: int = 0
    # Portable runners (flink, spark): how SDK workers start and where the job server is.
    environment_type: str | None = None
    environment_config: str | None = None
    sdk_container_image: str | None = None
    job_endpoint: str | None = None
    # Dataflow
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    machine_type: str | None = None
    num_workers: int | None = None
    max_num_workers: int | None = None
    disk_size_gb: int | None = None
    service_account_email: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    use_public_ips: bool | None = None
    dataflow_service_options: list[str] = field(default_factory=list)
    # Flink
    flink_master: str | None = None
    flink_version: str | None = None
    flink_job_server_jar: str | None = None
    parallelism: int | None = None
    # Spark
    spark_master_url: str | None = None
    spark_job_server_jar: str | None = None
    spark_version: str | None = None
    # Worker packaging: ship this project to remote workers (sdist built from setup.py).
    package_project: bool = False
    requirements_file: str | None = None
    extra_packages: list[str] = field(default_factory=list)
    # Anything else, passed verbatim (`--flag=value` strings).
    extra_options: list[str] = field(default_factory=list)

    def validate(self) -> None:
        require_choice("beam.runner", self.runner, RUNNERS)
        require_choice("beam.direct_running_mode", self.direct_running_mode, DIRECT_RUNNING_MODES)
        if self.environment_type is not None:
            require_choice("beam.environment_type", self.environment_type.upper(), ENVIRONMENT_TYPES)
        if self.runner == "dataflow":
            missing = [name for name in ("project", "region", "temp_location") if not getattr(self, name)]
            if missing:
                raise ConfigError(
                    f"beam=dataflow needs {', '.join('beam.' + m for m in missing)} (e.g. beam.project=my-project)"
                )
            if not str(self.temp_location).startswith("gs://"):
                raise ConfigError(f"beam.temp_location={self.temp_location!r} must be a gs:// path on Dataflow")
        if self.runner == "dask":
            given = [name for name in ("dask_scheduler_address", "dask_scheduler_file") if getattr(self, name)]
            if len(given) != 1:
                raise ConfigError(
                    "beam=dask needs exactly one of beam.dask_scheduler_address=tcp://HOST:8786 and "
                    f"beam.dask_scheduler_file=/shared/scheduler.json (given: {', '.join(given) or 'neither'})"
                )
        require_non_negative("beam.dask_partitions", self.dask_partitions)
        if self.runner == "flink" and not (self.flink_master or self.job_endpoint):
            raise ConfigError(
                "beam=flink needs beam.flink_master=HOST:PORT (or beam.job_endpoint of a running job server)"
            )
        if self.runner == "spark" and not (self.spark_master_url or self.job_endpoint):
            raise ConfigError("beam=spark needs beam.spark_master_url=spark://HOST:7077 (or beam.job_endpoint)")
        for index, option in enumerate(self.extra_options):
            if not option.startswith("--"):
                raise ConfigError(f"beam.extra_options[{index}]={option!r} must look like --flag=value")


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
    # Beam loads here, not at the top: the config checks import this module and stay light.
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser  # noqa: PLC0415

    if any(arg.startswith("--dask_") for arg in args):
        # Registers Beam's DaskOptions; it imports dask.distributed, so only when asked for.
        import apache_beam.runners.dask.dask_runner  # noqa: F401, PLC0415

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
    # Beam loads here, not at the top: the config checks import this module and stay light.
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

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
