#!/usr/bin/env bash
# A real single-node Slurm for tests, all its state in one folder: munged, slurmctld and slurmd
# run as root with a generated slurm.conf (select/cons_tres, proctrack/linuxproc, one node with
# this machine's CPUs, a partition that oversubscribes).
#
#   source tests/slurm/local_slurm.sh
#   slurm_start DIR    # starts the daemons; exports SLURM_CONF; waits until the node is idle
#   slurm_stop         # stops them (by their pid files) and waits until they are gone
#
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge (scripts/install-deps.sh).
# slurm_start returns 1 with the reason on stderr when it cannot start them.

slurm_dir=""

# A free TCP port from the kernel's ephemeral range.
_slurm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

slurm_start() {
  slurm_dir=$1
  mkdir -p "$slurm_dir"/{state,spool,munge}
  chmod 700 "$slurm_dir/munge"
  local host cpus mem_mb ctld_port d_port
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 / 2 }' /proc/meminfo)
  ctld_port=$(_slurm_free_port)
  d_port=$(_slurm_free_port)

  # munge: a fresh key, its own socket (the system's munged, if any, is left alone).
  head -c 1024 /dev/urandom >"$slurm_dir/munge/munge.key"
  chmod 400 "$slurm_dir/munge/munge.key"
  munged --force --key-file="$slurm_dir/munge/munge.key" --socket="$slurm_dir/munge/munge.socket" \
    --pid-file="$slurm_dir/munge/munged.pid" --log-file="$slurm_dir/munge/munged.log" \
    --seed-file="$slurm_dir/munge/munged.seed" >"$slurm_dir/munge/start.log" 2>&1 || {
    echo "slurm_start: munged did not start: $(cat "$slurm_dir/munge/start.log")" >&2
    return 1
  }

  cat >"$slurm_dir/slurm.conf" <<CONF
ClusterName=axontest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$slurm_dir/munge/munge.socket
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool
SlurmctldPidFile=$slurm_dir/slurmctld.pid
SlurmdPidFile=$slurm_dir/slurmd.pid
SlurmctldLogFile=$slurm_dir/slurmctld.log
SlurmdLogFile=$slurm_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
KillWait=5
InactiveLimit=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=axon Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF
  export SLURM_CONF=$slurm_dir/slurm.conf

  slurmctld -f "$SLURM_CONF" -i >"$slurm_dir/slurmctld.out" 2>&1 || {
    echo "slurm_start: slurmctld did not start: $(cat "$slurm_dir/slurmctld.out") $(tail -5 "$slurm_dir/slurmctld.log" 2>/dev/null)" >&2
    return 1
  }
  slurmd -f "$SLURM_CONF" -N "$host" >"$slurm_dir/slurmd.out" 2>&1 || {
    echo "slurm_start: slurmd did not start: $(cat "$slurm_dir/slurmd.out") $(tail -5 "$slurm_dir/slurmd.log" 2>/dev/null)" >&2
    return 1
  }
  # Wait (at most 30 s) for the node to be idle.
  local i state
  for ((i = 0; i < 150; i++)); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null)
    [[ $state == idle ]] && return 0
    sleep 0.2
  done
  echo "slurm_start: the node never became idle (state '$state'); slurmd.log: $(tail -5 "$slurm_dir/slurmd.log")" >&2
  return 1
}

# Stops one daemon by its pid file; waits at most 10 s, then kills it.
_slurm_stop_pid() {
  local file=$1 pid i
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}

slurm_stop() {
  [[ -n $slurm_dir ]] || return 0
  scancel --full --quiet -u root 2>/dev/null || true
  _slurm_stop_pid "$slurm_dir/slurmd.pid"
  _slurm_stop_pid "$slurm_dir/slurmctld.pid"
  _slurm_stop_pid "$slurm_dir/munge/munged.pid"
}
