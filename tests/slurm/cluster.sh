#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost for the cluster tests (issue: Slurm job arrays).
#
#   cluster.sh start DIR   configures munge and Slurm under DIR, starts munged, slurmctld and
#                          slurmd, waits until the node is idle, and prints `export SLURM_CONF=…`
#   cluster.sh stop DIR    stops the three daemons started by `start DIR`
#
# Environment of `start`: MAX_ARRAY_SIZE (Slurm's MaxArraySize, default 10000: array indices
# 0..MAX_ARRAY_SIZE-1) and GPUS (default 0: that many GPUs declared as a generic resource without
# device files, so that GPU requests are accepted and scheduled; no job here uses a real GPU).
#
# Everything (keys, sockets, spool, state, logs, pid files) lives under DIR, so it never touches
# /etc and two test runs with different DIRs do not see each other. Needs Debian's slurm-wlm and
# munge (`apt-get install slurm-wlm munge`) and root (slurmd runs jobs as their owner).
set -euo pipefail
# The daemons live in /usr/sbin, which a non-login shell's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=${2:?usage: cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
    for daemon in slurmd slurmctld munged; do
        local pidfile="$dir/$daemon.pid"
        [[ -f $pidfile ]] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi
[[ $cmd == start ]] || { echo "cluster.sh: unknown command '$cmd' (start or stop)" >&2; exit 2; }

for tool in munged slurmctld slurmd sbatch scontrol; do
    command -v "$tool" >/dev/null || {
        echo "cluster.sh: '$tool' not found; install Debian's slurm-wlm and munge" >&2
        exit 2
    }
done

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
# Ports away from the defaults (6817/6818), picked per DIR so parallel clusters do not collide.
base=$(( 20000 + $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 20000 ))
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"

# munge: a fresh key and a private socket.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"

max_array=${MAX_ARRAY_SIZE:-10000}
gpus=${GPUS:-0}
gres_types="" node_gres=""
if (( gpus > 0 )); then
    gres_types="GresTypes=gpu"
    node_gres="Gres=gpu:$gpus"
    # slurmd counts a GPU per device file and only checks that the file exists.
    : >"$dir/gres.conf"
    for i in $(seq 0 $((gpus - 1))); do
        : >"$dir/fake-gpu$i"
        echo "NodeName=$host Name=gpu File=$dir/fake-gpu$i" >>"$dir/gres.conf"
    done
fi

cat >"$dir/slurm.conf" <<CONF
ClusterName=lipctl-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MaxArraySize=$max_array
$gres_types
SchedulerParameters=defer_batch,sched_interval=1
MessageTimeout=30
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb $node_gres State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$dir/slurm.conf"

slurmctld -i -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

for _ in $(seq 100); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
    [[ $state == idle ]] && break
    sleep 0.2
done
if [[ ${state:-} != idle ]]; then
    echo "cluster.sh: node did not become idle (state '${state:-none}'); logs in $dir/log" >&2
    tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    stop
    exit 1
fi
echo "export SLURM_CONF=$SLURM_CONF"
