#!/usr/bin/env bash
# One training process, started by srun or torchrun: its output is appended to
# $RANK_LOG_DIR/rank-<global rank>.log (a requeued job appends its next attempt below a header).
# `exec` keeps the process the launcher signals the trainer itself, so SIGUSR1 reaches Python.
set -euo pipefail
rank=${RANK:-${SLURM_PROCID:-0}}
log=${RANK_LOG_DIR:?RANK_LOG_DIR is set by launch/slurm/common.sh}/rank-$rank.log
echo "=== $(date -Is) $(hostname -s) rank $rank, job ${SLURM_JOB_ID:-?} attempt ${SLURM_RESTART_COUNT:-0} ===" >>"$log"
exec "$@" >>"$log" 2>&1
