#!/usr/bin/env bash
# Submit a corpus pipeline to Google Cloud Dataflow.
#
#   GCP_PROJECT=my-project GCP_REGION=us-central1 GCS_BUCKET=my-bucket \
#     launch/beam/dataflow.sh prepare corpus=commoncrawl corpus.work_dir=gs://my-bucket/dsm
#
# Needs on the submitting machine: this project installed with the `dataflow` extra
# (pip install -e ".[dataflow]") and `gcloud auth application-default login` (or a service
# account key in GOOGLE_APPLICATION_CREDENTIALS). Workers receive this project as an sdist built
# from setup.py and install its dependencies at start-up; for faster starts, build a custom
# container from the same requirements and pass beam.sdk_container_image=... .
# Knobs: DATAFLOW_MACHINE_TYPE (n2-standard-8), DATAFLOW_MAX_WORKERS (100).
source "$(dirname "$0")/common.sh" "$@"
: "${GCP_PROJECT:?set GCP_PROJECT}" "${GCP_REGION:?set GCP_REGION}" "${GCS_BUCKET:?set GCS_BUCKET}"
submit beam=dataflow beam.project="$GCP_PROJECT" beam.region="$GCP_REGION" \
  beam.temp_location="gs://$GCS_BUCKET/beam-tmp" beam.staging_location="gs://$GCS_BUCKET/beam-staging" \
  beam.machine_type="${DATAFLOW_MACHINE_TYPE:-n2-standard-8}" beam.max_num_workers="${DATAFLOW_MAX_WORKERS:-100}" \
  "${OVERRIDES[@]}"
