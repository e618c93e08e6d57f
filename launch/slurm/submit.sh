#!/usr/bin/env bash
# Submit a training recipe to Slurm, its shape and place from environment knobs.
#
#   launch/slurm/submit.sh RECIPE [--dry-run] [hydra overrides...]      RECIPE: pretrain sft grpo evaluate rejection_sample
#
#   NODES=4 GPUS_PER_NODE=8 TIME_LIMIT=48:00:00 PARTITION=gpu ACCOUNT=math \
#     launch/slurm/submit.sh pretrain +experiment=deepseekmath_base_7b corpus.work_dir=/data/dsm
#   GPUS_PER_NODE=0 TASKS_PER_NODE=2 CPUS_PER_TASK=1 \
#     launch/slurm/submit.sh pretrain --dry-run +experiment=tiny_cpu parallelism=tp2
#
# Before anything is queued the config is composed and validated (a bad override: one line,
# exit 2) and the launch is printed; --dry-run stops there and also prints the sbatch command.
# Knobs -> sbatch options (unset: the #SBATCH default in launch/slurm/RECIPE.sbatch):
#   NODES --nodes, TASKS_PER_NODE --ntasks-per-node (default: GPUS_PER_NODE when that is set
#   and > 0), GPUS_PER_NODE --gpus-per-node (0 for CPU-only), CPUS_PER_TASK --cpus-per-task,
#   TIME_LIMIT --time, PARTITION, ACCOUNT, QOS, JOB_NAME --job-name,
#   PREEMPT_SIGNAL (USR1; B:USR1 for the batch shell) and PREEMPT_WARNING_SECONDS -> --signal,
#   LOG_ROOT (logs) -> --output=$LOG_ROOT/<job name>-<job id>.log, ranks in $LOG_ROOT/<job name>-<job id>/,
#   EXTRA_SBATCH_ARGS (split on spaces, e.g. "--exclusive --constraint=h100").
# The other knobs (LAUNCHER, OUTPUT_DIR, VENV, SETUP_SCRIPT, ...) travel to the job through the
# environment: see launch/slurm/common.sh.
set -euo pipefail
# shellcheck source=launch/slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

recipe=${1:-}
script=$REPO_ROOT/launch/slurm/$recipe.sbatch
if [ -z "$recipe" ] || [ ! -f "$script" ]; then
  echo "usage: $0 {pretrain|sft|grpo|evaluate|rejection_sample} [--dry-run] [hydra overrides...]" >&2
  exit 2
fi
shift
dry_run=0
if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi

if [ -z "${TASKS_PER_NODE:-}" ] && [ "${GPUS_PER_NODE:-0}" -gt 0 ] 2>/dev/null; then
  export TASKS_PER_NODE=$GPUS_PER_NODE  # one rank per GPU
fi
LOG_ROOT=$(mkdir -p "${LOG_ROOT:-logs}" && cd "${LOG_ROOT:-logs}" && pwd)
export LOG_ROOT

sbatch_args=()
for pair in "${KNOB_OPTIONS[@]}"; do
  knob=${pair%%:*} option=${pair#*:}
  if [ -n "${!knob:-}" ]; then sbatch_args+=("--$option=${!knob}"); fi
done
signal=$(preempt_signal_option "$script")
if [ -n "$signal" ]; then sbatch_args+=("--signal=$signal"); fi
sbatch_args+=("--output=$LOG_ROOT/%x-%j.log" "--export=ALL,DEEPSEEKMATH_REPO=$REPO_ROOT")
read -r -a extra <<<"${EXTRA_SBATCH_ARGS:-}"
sbatch_args+=("${extra[@]}")

# The job's own dry run, outside any allocation this shell may be in: validates the config and
# shows the launch with this submission's shape.
env -u SLURM_JOB_ID bash "$script" --dry-run "$@"
if [ "$dry_run" = 1 ]; then
  echo "submit: $(print_command sbatch "${sbatch_args[@]}" "$script" "$@")"
  exit 0
fi
job_id=$(sbatch --parsable "${sbatch_args[@]}" "$script" "$@")
job_id=${job_id%%;*}
job_name=$(knob_value "$script" JOB_NAME job-name)
echo "submitted job $job_id; batch log $LOG_ROOT/$job_name-$job_id.log, ranks in $LOG_ROOT/$job_name-$job_id/"
