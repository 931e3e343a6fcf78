#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for running and testing the workflow's
# SLURM profile (workflow/profiles/slurm):
#
#   bash scripts/slurm_cluster.sh start    # install (root, apt) if missing, start, wait for an idle node
#   bash scripts/slurm_cluster.sh status   # sinfo + squeue
#   bash scripts/slurm_cluster.sh stop     # cancel jobs, stop the daemons
#   eval "$(bash scripts/slurm_cluster.sh env)"   # point sbatch/squeue/sinfo at this cluster
#
# Everything it writes (slurm.conf, gres.conf, munge key and socket, state, logs, pid files)
# lives in HEPTAPOD_SLURM_DIR (default /tmp/heptapod-slurm); client commands take
# SLURM_CONF=$HEPTAPOD_SLURM_DIR/slurm.conf (`env` prints it). The one thing outside it is a link
# /etc/slurm/slurm.conf -> that file, made only where no slurm.conf is there and removed by
# `stop`: the Snakemake job step (snakemake-executor-plugin-slurm-jobstep 0.6.1) drops every
# SLURM_* variable, SLURM_CONF included, before its `srun`, which then only finds the default path.
# One GPU gres backed by /dev/null lets `--gpus=1` / `--gres=gpu:1` jobs schedule on a CPU node.
set -euo pipefail

DIR=${HEPTAPOD_SLURM_DIR:-/tmp/heptapod-slurm}
NODE=$(hostname -s)
# Ports of their own, so that a site's SLURM on the default 6817/6818 is not disturbed.
CTLD_PORT=${HEPTAPOD_SLURM_PORT:-6917}
SLURMD_PORT=$((CTLD_PORT + 1))
export SLURM_CONF=$DIR/slurm.conf
DEFAULT_CONF=/etc/slurm/slurm.conf

log() { echo "slurm_cluster: $*" >&2; }
die() { log "$*"; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and installing them needs root (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is not available"
    log "installing slurm-wlm and munge with apt-get"
    apt-get update -qq
    # No recommends: the daemons and client commands are enough (no accounting database).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
    local cpus mem
    cpus=$(nproc)
    # slurmd sees the machine's real memory; leave some for the OS so that the node is not drained.
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh: one node, controller and compute on this machine.
ClusterName=heptapod
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups inside a container or small VM: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No accounting daemon: squeue is the status source (MinJobAge keeps finished jobs visible).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# React to submissions and finished jobs at once rather than on the periodic passes.
SchedulerParameters=sched_min_interval=0
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # File=/dev/null: a stand-in device, enough for the scheduler to count one GPU.
    echo "NodeName=$NODE Name=gpu File=/dev/null" >"$DIR/gres.conf"
}

link_default_conf() {
    [ "$(readlink "$DEFAULT_CONF" 2>/dev/null)" = "$SLURM_CONF" ] && return
    [ -e "$DEFAULT_CONF" ] && die "$DEFAULT_CONF exists (another SLURM configuration): use that cluster, or move it away"
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$SLURM_CONF" "$DEFAULT_CONF"
}

start_munge() {
    alive munged && return
    [ -f "$DIR/munge/munge.key" ] || { mungekey --create --keyfile "$DIR/munge/munge.key" --bits 1024 \
        && chmod 600 "$DIR/munge/munge.key"; }
    chmod 700 "$DIR/munge"
    # --force: the socket and key sit in a folder of our own, not munge's usual /run and /etc.
    munged --force --key-file "$DIR/munge/munge.key" --socket "$DIR/munge/munge.socket" \
        --pid-file "$DIR/munged.pid" --log-file "$DIR/munged.log" --seed-file "$DIR/munge/munge.seed"
}

wait_idle() {
    local state=""
    for _ in $(seq 1 120); do
        state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        case $state in
            idle|mix|alloc) return 0 ;;  # a trailing * would mean "not responding"
        esac
        sleep 0.5
    done
    die "node $NODE is not idle after 60 s (state: '${state:-no answer}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

start() {
    install_packages
    # slurmd starts jobs as their owners, and the /etc/slurm link needs root too.
    [ "$(id -u)" = 0 ] || die "starting the cluster needs root"
    if alive slurmctld && alive slurmd && alive munged; then
        wait_idle
        log "already running (SLURM_CONF=$SLURM_CONF)"
        return
    fi
    write_config
    link_default_conf
    start_munge
    # -c: start from a clean state, no jobs left over from an earlier run.
    alive slurmctld || slurmctld -c -f "$SLURM_CONF"
    alive slurmd || slurmd -N "$NODE" -f "$SLURM_CONF"
    wait_idle
    log "up: node $NODE idle (SLURM_CONF=$SLURM_CONF)"
}

# TERM the daemons, wait for them to exit (each takes ~2 s) so that a following start finds the
# ports free; munged last, the SLURM daemons authenticate through it until they are gone.
kill_wait() {
    local daemon pids=()
    for daemon in "$@"; do
        alive "$daemon" && pids+=("$(cat "$DIR/$daemon.pid")")
        rm -f "$DIR/$daemon.pid"
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    local pid
    for _ in $(seq 1 50); do
        sleep 0.2
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && continue 2; done
        return 0
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

stop() {
    # Cancel what is left, so that no job step outlives its slurmd.
    local jobs=""
    alive slurmctld && jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [ -z "${jobs// /}" ] || scancel $jobs || true
    kill_wait slurmd slurmctld
    kill_wait munged
    [ "$(readlink "$DEFAULT_CONF" 2>/dev/null)" = "$SLURM_CONF" ] && rm -f "$DEFAULT_CONF"
    log "stopped"
}

status() {
    alive slurmctld || { log "not running"; return 1; }
    sinfo
    squeue
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
