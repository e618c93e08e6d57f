# Shared by launch/slurm/*.sbatch and launch/slurm/submit.sh (sourced, never run).
#
# Inside a job, `run_recipe RECIPE [--dry-run] [hydra overrides...]`:
#   1. sets up the environment: SETUP_SCRIPT (site modules), the virtual environment, this
#      checkout on PYTHONPATH, NCCL/gloo network variables, thread counts;
#   2. composes and validates the recipe's config (launch/slurm/recipe_config.py): a bad
#      override stops here with one line, before any rank starts;
#   3. launches one process per GPU (LAUNCHER=srun: srun starts every rank, megatron reads
#      SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; LAUNCHER=torchrun: srun starts one torchrun per
#      node, c10d rendezvous on the first node), each rank's output appended to
#      $LOG_ROOT/<job name>-<job id>/rank-<rank>.log;
#   4. on the preemption warning (PREEMPT_SIGNAL, default USR1, sent by `--signal=USR1@N`,
#      `scancel --signal=USR1`, or to the batch shell with `--signal=B:USR1@N`) the trainer
#      checkpoints and writes <checkpoint dir>/exit_status.json; when that says reason=signal
#      (the preemption signal) or reason=duration, the job requeues itself (`scontrol requeue`)
#      and the next start resumes from <checkpoint dir>/latest. SIGTERM (scancel, time limit) is
#      checkpointed too but not requeued: a cancelled job stays cancelled.
#
# Knobs (environment; the #SBATCH lines of each recipe's script hold the defaults):
#   NODES TASKS_PER_NODE GPUS_PER_NODE CPUS_PER_TASK TIME_LIMIT PARTITION ACCOUNT QOS JOB_NAME
#   PREEMPT_SIGNAL PREEMPT_WARNING_SECONDS EXTRA_SBATCH_ARGS     (submission: see submit.sh)
#   LAUNCHER=srun|torchrun  LOG_ROOT=logs  OUTPUT_DIR (-> trainer.output_dir; checkpoints under it)
#   VENV (else $VIRTUAL_ENV, else <repo>/.venv)  SETUP_SCRIPT  PYTHON  CHECK_DATA=1
#   RDZV_PORT (default 20000 + job id mod 20000)  NETWORK_INTERFACE (NCCL/GLOO_SOCKET_IFNAME)
#   MAX_REQUEUES=20  EXIT_WAIT_SECONDS=120 (after the first rank exits, the rest get this long)
#   TORCHRUN_SHUTDOWN_SECONDS=300 (torchrun waits this long for a checkpoint before SIGKILL)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export DEEPSEEKMATH_REPO=$REPO_ROOT

# The options a knob sets, in the order submit.sh passes them.
# shellcheck disable=SC2034  # used by submit.sh
KNOB_OPTIONS=(NODES:nodes TASKS_PER_NODE:ntasks-per-node GPUS_PER_NODE:gpus-per-node CPUS_PER_TASK:cpus-per-task
             TIME_LIMIT:time PARTITION:partition ACCOUNT:account QOS:qos JOB_NAME:job-name)

slurm_error() { echo "error: $*" >&2; exit 2; }

# The default of an sbatch option in a script's #SBATCH lines (empty when absent).
sbatch_default() {
  local script=$1 option=$2
  sed -n "s/^#SBATCH --$option=//p" "$script" | head -n 1
}

# The value a knob has for this submission: the environment, else the script's #SBATCH line.
knob_value() {
  local script=$1 knob=$2 option=$3
  if [ -n "${!knob:-}" ]; then echo "${!knob}"; else sbatch_default "$script" "$option"; fi
}

# The --signal option: PREEMPT_SIGNAL (USR1; "B:USR1" signals the batch shell, which forwards
# it) PREEMPT_WARNING_SECONDS before the time limit.
preempt_signal_option() {
  local script=$1 default signal seconds
  default=$(sbatch_default "$script" signal)
  [ -n "$default" ] || return 0
  signal=${PREEMPT_SIGNAL:-${default%@*}}
  seconds=${PREEMPT_WARNING_SECONDS:-${default#*@}}
  [[ "$seconds" =~ ^[0-9]+$ ]] || slurm_error "PREEMPT_WARNING_SECONDS=$seconds is not a number of seconds"
  echo "$signal@$seconds"
}

setup_job_environment() {
  if [ -n "${SETUP_SCRIPT:-}" ]; then
    # shellcheck disable=SC1090
    source "$SETUP_SCRIPT"
  fi
  local venv=${VENV:-${VIRTUAL_ENV:-}}
  if [ -z "$venv" ] && [ -f "$REPO_ROOT/.venv/bin/activate" ]; then venv=$REPO_ROOT/.venv; fi
  if [ -n "$venv" ]; then
    [ -f "$venv/bin/activate" ] || slurm_error "VENV=$venv has no bin/activate"
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
  fi
  PYTHON=${PYTHON:-python}
  command -v "$PYTHON" >/dev/null || slurm_error "no $PYTHON on PATH (set VENV or PYTHON)"
  # This checkout first, also in every rank and DataLoader worker.
  export PYTHONPATH=$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}
  export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
  export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  # megatron-core orders tensor-parallel communication behind compute on one connection.
  export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  if [ -n "${NETWORK_INTERFACE:-}" ]; then
    export NCCL_SOCKET_IFNAME=$NETWORK_INTERFACE GLOO_SOCKET_IFNAME=$NETWORK_INTERFACE
  fi
}

# Compose and validate; sets RECIPE_MODULE, RECIPE_ARGS, OUTPUT_DIR, CHECKPOINT_DIR, STOP_*.
resolve_recipe() {
  local recipe=$1 assignments
  shift
  assignments=$(JOB_WORLD_SIZE=$(( JOB_NODES * JOB_TASKS_PER_NODE )) \
    "$PYTHON" "$REPO_ROOT/launch/slurm/recipe_config.py" "$recipe" "$@") || exit 2
  eval "$assignments"
}

# The preemption signal's name without "B:" or "SIG" (USR1), as `kill -s` and `trap` take it.
preempt_signal_name() {
  local name=${PREEMPT_SIGNAL:-USR1}
  name=${name#B:}
  echo "${name#SIG}"
}

# A training recipe must turn the preemption signal into checkpoint-and-exit, or the warning
# would kill it (the default action of SIGUSR1 is to terminate).
check_preempt_signal_handled() {
  [ -n "$CHECKPOINT_DIR" ] || return 0
  local name
  name=SIG$(preempt_signal_name)
  if [[ ",$STOP_SIGNALS," != *",$name,"* ]]; then
    local handled=${STOP_SIGNALS:-none, trainer.exit_signal_handler=false}
    slurm_error "PREEMPT_SIGNAL=${name#SIG} is not among the trainer's exit signals ($handled): add it to trainer.exit_signals"
  fi
}

# The allocation's shape: from Slurm inside a job, from the knobs/#SBATCH defaults outside.
job_shape() {
  local script=$1
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    JOB_NODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    JOB_TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / JOB_NODES ))}
    JOB_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
    JOB_LABEL=${SLURM_JOB_NAME:-$RECIPE}-$SLURM_JOB_ID
    JOB_HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    JOB_PORT=${RDZV_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
  else
    JOB_NODES=$(knob_value "$script" NODES nodes)
    JOB_TASKS_PER_NODE=$(knob_value "$script" TASKS_PER_NODE ntasks-per-node)
    JOB_CPUS_PER_TASK=$(knob_value "$script" CPUS_PER_TASK cpus-per-task)
    JOB_LABEL=$(knob_value "$script" JOB_NAME job-name)-JOBID
    JOB_HEAD='<first node>'
    JOB_PORT=${RDZV_PORT:-'20000+JOBID%20000'}
  fi
  JOB_NODES=${JOB_NODES:-1} JOB_TASKS_PER_NODE=${JOB_TASKS_PER_NODE:-1} JOB_CPUS_PER_TASK=${JOB_CPUS_PER_TASK:-1}
  LOG_DIR=${LOG_ROOT:-logs}/$JOB_LABEL
}

# LAUNCH_COMMAND: the srun line that starts every rank.
compose_launch_command() {
  local rank_exec=$REPO_ROOT/launch/slurm/rank_exec.sh
  case "${LAUNCHER:-srun}" in
    srun)
      # A rank stopping with 75 after a checkpoint is not a failure to kill the others for (a
      # site's KillOnBadExit=1 would cut rank 0 off before exit_status.json); a crashed rank
      # still takes the rest down after EXIT_WAIT_SECONDS instead of the collective timeout.
      LAUNCH_COMMAND=(srun --nodes="$JOB_NODES" --ntasks="$(( JOB_NODES * JOB_TASKS_PER_NODE ))"
        --ntasks-per-node="$JOB_TASKS_PER_NODE" --cpus-per-task="$JOB_CPUS_PER_TASK"
        --wait="${EXIT_WAIT_SECONDS:-120}" --kill-on-bad-exit=0
        "$rank_exec" "$PYTHON" -m "$RECIPE_MODULE" "${RECIPE_ARGS[@]}")
      ;;
    torchrun)
      local signals=SIGTERM,SIGINT,SIGHUP,SIGQUIT
      local preempt
      preempt=SIG$(preempt_signal_name)
      [[ ",$signals," == *",$preempt,"* ]] || signals=$signals,$preempt
      LAUNCH_COMMAND=(srun --nodes="$JOB_NODES" --ntasks="$JOB_NODES" --ntasks-per-node=1
        --cpus-per-task="$(( JOB_CPUS_PER_TASK * JOB_TASKS_PER_NODE ))" --wait="${EXIT_WAIT_SECONDS:-120}"
        "$PYTHON" -m torch.distributed.run --nnodes="$JOB_NODES" --nproc-per-node="$JOB_TASKS_PER_NODE"
        --rdzv-backend=c10d --rdzv-endpoint="$JOB_HEAD:$JOB_PORT" --rdzv-id="${SLURM_JOB_ID:-0}" --max-restarts=0
        --signals-to-handle="$signals" --shutdown-timeout="${TORCHRUN_SHUTDOWN_SECONDS:-300}"
        --no-python "$rank_exec" "$PYTHON" -m "$RECIPE_MODULE" "${RECIPE_ARGS[@]}")
      ;;
    *) slurm_error "LAUNCHER=$LAUNCHER: use srun (one task per GPU) or torchrun (one torchrun per node)" ;;
  esac
}

print_command() { printf '%q ' "$@" | sed 's/ $//'; echo; }

# A fingerprint of exit_status.json (inode, size, mtime): the trainer replaces the file
# atomically, so a changed fingerprint means this attempt wrote it (no clock comparison
# across a shared file system).
exit_status_fingerprint() {
  local file=$CHECKPOINT_DIR/exit_status.json
  [ -f "$file" ] && stat -c '%i %s %Y' "$file" || echo none
}

read_exit_status() {
  "$PYTHON" - "$CHECKPOINT_DIR/exit_status.json" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
print(status.get("reason") or "-", status.get("signal") or "-", status.get("iteration", "-"))
PY
}

# Forward a preemption signal the batch shell itself received (--signal=B:..., scancel --batch
# or --full) to srun, which passes it to every rank.
forward_to_step() {
  echo "$(date -Is) batch shell got SIG$1: forwarding it to the ranks" >&2
  INTERRUPTED=1
  [ -n "${STEP_PID:-}" ] && kill -s "$1" "$STEP_PID" 2>/dev/null || true
}

run_recipe() {
  RECIPE=$1
  shift
  local dry_run=0 script=$REPO_ROOT/launch/slurm/$RECIPE.sbatch
  if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi
  if [ "$dry_run" = 0 ] && [ -z "${SLURM_JOB_ID:-}" ]; then
    slurm_error "not inside a Slurm job: submit with launch/slurm/submit.sh $RECIPE ... (or sbatch), or pass --dry-run"
  fi
  setup_job_environment
  job_shape "$script"
  export LOG_ROOT=${LOG_ROOT:-logs}
  resolve_recipe "$RECIPE" "hydra.run.dir=$LOG_DIR/hydra" "$@"
  check_preempt_signal_handled
  compose_launch_command
  if [ "$dry_run" = 1 ]; then
    echo "config: $RECIPE_MODULE, composed and validated"
    if [ -n "$OUTPUT_DIR" ]; then echo "outputs: $OUTPUT_DIR"; fi
    if [ -n "$CHECKPOINT_DIR" ]; then echo "checkpoints: $CHECKPOINT_DIR (a restart resumes from its latest)"; fi
    echo "logs: $LOG_DIR/rank-<rank>.log"
    if [ "${LAUNCHER:-srun}" = srun ]; then echo "rendezvous: MASTER_ADDR=$JOB_HEAD MASTER_PORT=$JOB_PORT"; fi
    echo "launch: $(print_command "${LAUNCH_COMMAND[@]}")"
    return 0
  fi

  mkdir -p "$LOG_DIR"
  export RANK_LOG_DIR=$LOG_DIR
  if [ "${LAUNCHER:-srun}" = srun ]; then
    # Plain srun ranks: megatron's runtime reads SLURM_PROCID/NTASKS/LOCALID and these two.
    export MASTER_ADDR=$JOB_HEAD MASTER_PORT=$JOB_PORT
    unset RANK WORLD_SIZE LOCAL_RANK
  fi
  local attempt=${SLURM_RESTART_COUNT:-0} before status fingerprint
  echo "$(date -Is) job $SLURM_JOB_ID attempt $attempt: $JOB_NODES node(s) x $JOB_TASKS_PER_NODE rank(s), head $JOB_HEAD"
  echo "logs: $LOG_DIR/rank-<rank>.log; checkpoints: ${CHECKPOINT_DIR:-none}"
  echo "launch: $(print_command "${LAUNCH_COMMAND[@]}")"
  before=$(exit_status_fingerprint)

  local preempt
  preempt=$(preempt_signal_name)
  # shellcheck disable=SC2064  # the signal's name is fixed now, on purpose
  trap "forward_to_step $preempt" "$preempt"
  "${LAUNCH_COMMAND[@]}" &
  STEP_PID=$!
  # `wait` returns early when a trapped signal arrives; wait again (bash keeps the status of a
  # step that ended meanwhile) until it returns because the step ended.
  while true; do
    INTERRUPTED=0 status=0
    wait "$STEP_PID" || status=$?
    [ "$INTERRUPTED" = 1 ] || break
  done
  trap - "$preempt"
  echo "$(date -Is) ranks exited with status $status"

  fingerprint=$(exit_status_fingerprint)
  if [ -z "$CHECKPOINT_DIR" ] || [ "$fingerprint" = none ] || [ "$fingerprint" = "$before" ]; then
    return "$status"  # no word from the trainer this attempt (crash before training, or no checkpoints)
  fi
  local reason signal iteration
  read -r reason signal iteration < <(read_exit_status)
  echo "trainer: reason=$reason signal=$signal iteration=$iteration"
  case "$reason:$signal" in
    finished:*) return 0 ;;
    duration:* | "signal:SIG$preempt")
      if [ "$attempt" -ge "${MAX_REQUEUES:-20}" ]; then
        echo "not requeueing: attempt $attempt reached MAX_REQUEUES=${MAX_REQUEUES:-20}" >&2
        return "${STOP_EXIT_CODE:-75}"
      fi
      echo "$(date -Is) requeueing job $SLURM_JOB_ID: the next attempt resumes from iteration $iteration"
      scontrol requeue "$SLURM_JOB_ID" || { echo "scontrol requeue failed (job not requeueable?)" >&2; return "${STOP_EXIT_CODE:-75}"; }
      # Slurm now ends this attempt; nothing after this line is guaranteed to run.
      return 0
      ;;
    *) return "$status" ;;
  esac
}
