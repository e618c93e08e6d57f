#!/usr/bin/env bash
# Submit a corpus pipeline to an Apache Spark cluster through Beam's portable Spark runner.
#
#   SPARK_MASTER_URL=spark://master:7077 SPARK_JOB_SERVER_JAR=/opt/beam/beam-runners-spark-3-job-server.jar \
#     launch/beam/spark.sh prepare corpus.warc_inputs='[s3://cc/*.warc.gz]' corpus.work_dir=s3://bucket/dsm
#
# Needs on the cluster: Spark 3, and on every executor this project installed in
# /opt/deepseekmath/.venv (PROCESS environment; see conf/beam/spark.yaml), or Docker workers with
# beam.environment_type=DOCKER beam.sdk_container_image=YOUR_IMAGE. Give the job-server jar when
# Maven is unreachable, or pass beam.job_endpoint=HOST:8099 of a job server you run.
source "$(dirname "$0")/common.sh" "$@"
: "${SPARK_MASTER_URL:?set SPARK_MASTER_URL=spark://host:7077}"
extra=()
[ -n "${SPARK_JOB_SERVER_JAR:-}" ] && extra+=(beam.spark_job_server_jar="$SPARK_JOB_SERVER_JAR")
submit beam=spark beam.spark_master_url="$SPARK_MASTER_URL" "${extra[@]}" "${OVERRIDES[@]}"
