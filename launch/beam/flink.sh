#!/usr/bin/env bash
# Submit a corpus pipeline to an Apache Flink cluster through Beam's portable Flink runner.
#
#   FLINK_MASTER=jobmanager:8081 FLINK_JOB_SERVER_JAR=/opt/beam/beam-runners-flink-1.18-job-server.jar \
#     launch/beam/flink.sh prepare corpus.warc_inputs='[hdfs:///cc/*.warc.gz]' corpus.work_dir=hdfs:///dsm
#
# Needs on the cluster: Flink (version in conf/beam/flink.yaml), and on every task manager this
# project installed in /opt/deepseekmath/.venv (the PROCESS environment starts SDK workers with
# that Python; change beam.environment_config to match). Alternatively use Docker workers:
# beam.environment_type=DOCKER beam.sdk_container_image=YOUR_IMAGE. The job-server jar must be
# given when the submitting machine cannot reach Maven (Beam downloads it otherwise); or run the
# job server yourself and pass beam.job_endpoint=HOST:8099. Paths must be readable by every
# worker (HDFS, S3, GCS; install the matching Beam filesystem extra).
source "$(dirname "$0")/common.sh" "$@"
: "${FLINK_MASTER:?set FLINK_MASTER=host:port}"
extra=()
[ -n "${FLINK_JOB_SERVER_JAR:-}" ] && extra+=(beam.flink_job_server_jar="$FLINK_JOB_SERVER_JAR")
[ -n "${FLINK_PARALLELISM:-}" ] && extra+=(beam.parallelism="$FLINK_PARALLELISM")
submit beam=flink beam.flink_master="$FLINK_MASTER" "${extra[@]}" "${OVERRIDES[@]}"
