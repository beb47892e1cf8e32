#!/usr/bin/env bash
# A one-node SLURM cluster on loopback, for testing the workflow's SLURM profile.
#
#   tests/slurm/cluster.sh install   apt-get install Debian's slurm-wlm and munge (if missing)
#   tests/slurm/cluster.sh start     write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh status    sinfo
#   tests/slurm/cluster.sh stop      cancel the jobs, stop the daemons this script started,
#                                    restore a slurm.conf that was there before
#
# Needs root (the daemons run as root; Debian's packages install into /etc and /usr).
# Settings that matter on a machine without systemd, cgroups or a slurmdbd (measured):
#   - slurmctld and slurmd run as root, `SlurmctldHost=<hostname>(127.0.0.1)`, `NodeAddr=127.0.0.1`;
#   - `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none` (no cgroups needed);
#   - accounting storage off, so `sacct` knows nothing: Snakemake's slurm executor must poll
#     with `--slurm-status-command squeue`, and finished jobs must stay visible to squeue for
#     longer than its poll interval: `MinJobAge=600`;
#   - the config must be /etc/slurm/slurm.conf: `srun` inside a job ignores SLURM_CONF;
#   - the node advertises the machine's real CPUs and memory (from `slurmd -C`), no GPUs.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
BACKUP=/etc/slurm/slurm.conf.robustlens-backup
MARK="# written by robustlens tests/slurm/cluster.sh"
STATE=/var/spool/robustlens-slurm
LOGS=/var/log/robustlens-slurm
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
OURS=$STATE/started   # names the daemons this script started (munged only when it was not running)

log() { printf 'cluster.sh: %s\n' "$*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        log "must run as root (it installs packages and starts slurmctld/slurmd as root)"
        exit 1
    fi
}

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        log "slurm-wlm and munge already installed: $(slurmctld -V)"
        return
    fi
    log "installing slurm-wlm and munge from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "installed $(slurmctld -V)"
}

write_conf() {
    local host cpus mem node
    host=$(hostname -s)
    # The node's real hardware as slurmd sees it, e.g.
    # "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$((mem * 95 / 100))  # leave room for the daemons and the Snakemake main process
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        log "keeping the existing $CONF as $BACKUP"
        mv "$CONF" "$BACKUP"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
    cat >"$CONF" <<EOF
$MARK
ClusterName=robustlens
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue must still see a finished job when Snakemake next polls (no accounting: no sacct)
MinJobAge=600
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF: node ${host}, ${cpus} CPUs, ${mem} MB, no GPUs"
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    need_root
    install
    write_conf
    : >"$OURS"
    # munge: the package created /etc/munge/munge.key; run munged as its own user
    if ! pid_alive "$MUNGE_PID"; then
        [[ -s /etc/munge/munge.key ]] || { mungekey --create --force && chown munge:munge /etc/munge/munge.key; }
        mkdir -p "$MUNGE_RUN" && chown munge:munge "$MUNGE_RUN"
        runuser -u munge -- /usr/sbin/munged
        echo munged >>"$OURS"
    fi
    munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }
    if pid_alive "$STATE/slurmctld.pid" || pid_alive "$STATE/slurmd.pid"; then
        log "slurm daemons already running; stop them first"
        exit 1
    fi
    slurmctld -c        # -c: start from a clean state (no jobs from an earlier cluster)
    echo slurmctld >>"$OURS"
    slurmd -c
    echo slurmd >>"$OURS"
    local i
    for i in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
            log "cluster up after ${i}s: $(sinfo -h -o '%N %c CPUs %m MB %T')"
            return
        fi
        sleep 1
    done
    log "the node did not come up; logs:"
    tail -20 "$LOGS"/slurmctld.log "$LOGS"/slurmd.log >&2 || true
    exit 1
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait, then KILL the process in PIDFILE
    local name=$1 pidfile=$2 pid i
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name ($pid)"; return 0; }
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    log "killed $name ($pid)"
}

stop() {
    need_root
    if pid_alive "$STATE/slurmctld.pid"; then
        scancel --user=root 2>/dev/null || true
    fi
    stop_pidfile slurmd "$STATE/slurmd.pid"
    stop_pidfile slurmctld "$STATE/slurmctld.pid"
    if [[ -f $OURS ]] && grep -qx munged "$OURS"; then
        stop_pidfile munged "$MUNGE_PID"
    fi
    rm -f "$OURS"
    if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then
        rm -f "$CONF"
        if [[ -f $BACKUP ]]; then
            mv "$BACKUP" "$CONF"
            log "restored the earlier $CONF"
        fi
    fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
