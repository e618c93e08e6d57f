#!/usr/bin/env bash
# A real one-node Slurm cluster on this host, for tests and for trying the sbatch scripts.
#
#   launch/slurm/local_cluster.sh start STATE_DIR [CPUS]   # munged + slurmctld + slurmd; prints env to source
#   launch/slurm/local_cluster.sh stop STATE_DIR
#
# Needs root and Debian's slurm-wlm + munge (apt-get install -y slurm-wlm munge). Everything the
# daemons write (config, state, spool, logs, pid files) stays under STATE_DIR; the ports are
# non-default so a system Slurm is not disturbed. After `start`, `source STATE_DIR/env.sh` points
# sbatch/squeue/scontrol at this cluster (SLURM_CONF).
set -euo pipefail

command=${1:?usage: $0 start|stop STATE_DIR [CPUS]}
state=${2:?usage: $0 start|stop STATE_DIR [CPUS]}
cpus=${3:-$(nproc)}
mkdir -p "$state"
state=$(cd "$state" && pwd)
node=$(hostname -s)

# TERM to every daemon at once, then wait for each (KILL after 5 s).
stop_daemons() {
  local pidfile pids=()
  for pidfile in "$@"; do
    [ -f "$pidfile" ] || continue
    pids+=("$(cat "$pidfile")")
    kill "${pids[-1]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$@"
}

case "$command" in
  start)
    [ "$(id -u)" = 0 ] || { echo "local_cluster.sh: needs root (slurmd and munged run as root here)" >&2; exit 3; }
    for binary in munged slurmctld slurmd sbatch; do
      command -v "$binary" >/dev/null || { echo "local_cluster.sh: $binary not found (apt-get install -y slurm-wlm munge)" >&2; exit 3; }
    done
    mkdir -p "$state"/{spool/ctld,spool/d,log,munge}
    # munge: the Debian package creates /etc/munge/munge.key; run our own daemon on our own socket.
    key=/etc/munge/munge.key
    [ -f "$key" ] || { mkdir -p /etc/munge; dd if=/dev/urandom bs=1 count=1024 of="$key" 2>/dev/null; chmod 400 "$key"; }
    munged --force --socket="$state/munge/munge.socket" --pid-file="$state/munge/munged.pid" \
      --log-file="$state/log/munged.log" --seed-file="$state/munge/munge.seed" --key-file="$key"
    ctld_port=$((20000 + RANDOM % 20000))
    cat > "$state/slurm.conf" <<CONF
ClusterName=localtest
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s); a test cluster wants it short.
AuthInfo=socket=$state/munge/munge.socket,cred_expire=5
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Scheduling passes every second: a requeued job starts as soon as it is eligible.
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ReturnToService=2
MpiDefault=none
KillWait=10
# Preemption tests requeue jobs.
JobRequeue=1
MinJobAge=300
NodeName=$node CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$state/slurm.conf"
    slurmctld -c -f "$SLURM_CONF"
    slurmd -c -f "$SLURM_CONF"
    echo "export SLURM_CONF=$state/slurm.conf" > "$state/env.sh"
    for _ in $(seq 100); do
      if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "local Slurm cluster up: source $state/env.sh"
        exit 0
      fi
      sleep 0.2
    done
    echo "local_cluster.sh: node did not become idle; logs in $state/log" >&2
    sinfo >&2 || true
    exit 1
    ;;
  stop)
    stop_daemons "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munge/munged.pid"
    ;;
  *)
    echo "usage: $0 start|stop STATE_DIR [CPUS]" >&2
    exit 2
    ;;
esac
