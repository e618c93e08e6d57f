#!/usr/bin/env bash
# Run a corpus pipeline on a running dask.distributed cluster (beam_pipelines/runners/dask.py).
#
#   DASK_SCHEDULER_ADDRESS=tcp://scheduler:8786 launch/beam/dask.sh prepare corpus.work_dir=/shared/dsm
#   DASK_SCHEDULER_FILE=/shared/dask/scheduler.json DASK_PARTITIONS=256 launch/beam/dask.sh dedup corpus.work_dir=/shared/dsm
#
# The cluster: `dask scheduler` on one machine and `dask worker tcp://scheduler:8786 --nthreads 1
# --memory-limit 8GB` on each worker machine, every one with this project installed (same
# Python and packages as here). Paths (inputs, corpus.work_dir) must be readable and writable by
# every worker and by this machine: a shared filesystem, or gs:// / s3:// / hdfs:// with the
# matching Beam filesystem extra. On Slurm, launch/slurm/beam_dask.sbatch starts and stops the
# cluster around the stages; on one machine, python -m beam_pipelines.runners.dask_cluster.
# Knobs: DASK_SCHEDULER_ADDRESS or DASK_SCHEDULER_FILE (one of them), DASK_PARTITIONS (partitions
# of each shuffle, Create and Read; default twice the cluster's worker threads).
source "$(dirname "$0")/common.sh" "$@"
if [ -n "${DASK_SCHEDULER_ADDRESS:-}" ] && [ -n "${DASK_SCHEDULER_FILE:-}" ]; then
  echo "error: set DASK_SCHEDULER_ADDRESS or DASK_SCHEDULER_FILE, not both" >&2
  exit 2
fi
extra=()
if [ -n "${DASK_SCHEDULER_ADDRESS:-}" ]; then
  extra+=(beam.dask_scheduler_address="$DASK_SCHEDULER_ADDRESS")
elif [ -n "${DASK_SCHEDULER_FILE:-}" ]; then
  extra+=(beam.dask_scheduler_file="$DASK_SCHEDULER_FILE")
else
  echo "error: set DASK_SCHEDULER_ADDRESS=tcp://host:8786 (or DASK_SCHEDULER_FILE=/shared/scheduler.json)" >&2
  exit 2
fi
[ -n "${DASK_PARTITIONS:-}" ] && extra+=(beam.dask_partitions="$DASK_PARTITIONS")
submit beam=dask "${extra[@]}" "${OVERRIDES[@]}"
