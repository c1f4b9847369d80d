#!/usr/bin/env bash
# slurm-dev-cluster.sh — a real, single-host Slurm cluster for dnnbench's
# tests and CI (Debian bookworm, root, no systemd, no cgroups, no GPU).
#
# Several slurmd run on one host (Debian builds Slurm with MULTIPLE_SLURMD),
# node i at its own loopback address 127.0.0.i, fake GPUs are character
# devices made with mknod, and accounting runs on a private MariaDB + slurmdbd
# so that `sacct` gives real job states. A private sshd answers on the other
# nodes' addresses, so launchers that start remote ranks over ssh (horovodrun)
# reach "another node" as on a real cluster.
# Everything (config, state, logs, database, munge) lives under one scratch
# folder; the only file touched outside it is the /etc/slurm/slurm.conf
# symlink that lets plain `sbatch`/`squeue`/`sacct` work without SLURM_CONF.
#
# Run `scripts/slurm-dev-cluster.sh --help` for the usage text.
set -euo pipefail

readonly PROG="${0##*/}"
readonly CLUSTER_NAME="dnnbench"
readonly CTLD_PORT=6817
readonly DBD_PORT=6819
readonly SLURMD_BASE_PORT=17000 # node i listens on 17000+i
readonly SSH_PORT=17022         # the private sshd, on 127.0.0.2.. (nodes 2..)
readonly SYSTEM_CONF="/etc/slurm/slurm.conf"
readonly PACKAGES_BASE=(slurmctld slurmd slurm-client munge openssh-server openssh-client)
readonly TASK_PLUGIN="task/affinity" # binds each task to its step's CPUs (see write_slurm_conf)
readonly PACKAGES_ACCT=(slurmdbd mariadb-server)

usage() {
    cat <<EOF
Usage: $PROG up|down|status|env [options]

A single-host Slurm dev cluster (slurmctld + N slurmd + optional slurmdbd/MariaDB).

Commands:
  up       install missing Debian packages, write configs, start the daemons
           and wait until every node is idle and sacct answers. If the cluster
           is already up with the same settings it says so and exits 0; with
           other settings (or half up) it is restarted cleanly. Every fresh
           start empties slurmctld's state and the accounting database, so job
           ids start again at 1 without colliding with stale sacct records.
  down     cancel jobs, stop every daemon this script started (pid files),
           leave no processes behind.
  status   print sinfo and whether sacct answers; exit 1 if not up.
  env      print 'export SLURM_CONF=...' lines (eval "\$($PROG env)"), and the
           private sshd's port and key for ssh between nodes.

Options (flag / environment variable / default):
  --nodes N            DNNBENCH_SLURM_NODES          2     slurmd on ports 17001..
  --gpus-per-node G    DNNBENCH_SLURM_GPUS_PER_NODE  4     fake GPUs (GRES, mknod)
  --cpus-per-node C    DNNBENCH_SLURM_CPUS_PER_NODE  8     may exceed real cores
  --mem-per-node MB    DNNBENCH_SLURM_MEM_PER_NODE   8000  RealMemory per node
  --dir SCRATCH        DNNBENCH_SLURM_DIR            /tmp/dnnbench-slurm
  --max-array-size M   DNNBENCH_SLURM_MAX_ARRAY_SIZE 1001  MaxArraySize (max index M-1)
  --no-accounting      DNNBENCH_SLURM_ACCOUNTING=0         no slurmdbd/MariaDB (sacct fails)
  --no-install         DNNBENCH_SLURM_INSTALL=0            fail instead of apt-get install
  --timeout S          DNNBENCH_SLURM_TIMEOUT        60    bound on each wait in 'up'/'down'
  --db-port P          DNNBENCH_SLURM_DB_PORT        13306 private MariaDB port (127.0.0.1)
  -h, --help

Flags override environment variables. Fixed ports: slurmctld $CTLD_PORT,
slurmdbd $DBD_PORT, slurmd $((SLURMD_BASE_PORT + 1)).., sshd $SSH_PORT on 127.0.0.2..
(key SCRATCH/ssh/id_ed25519); so only one such cluster per host. Logs: SCRATCH/log/. Partitions: 'debug' (default) and 'gpu', both
with all nodes and MaxTime=INFINITE. Must run as root.
EOF
}

log() { printf '[slurm-dev] %s\n' "$*" >&2; }
die() {
    printf '[slurm-dev] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- options ---
NODES="${DNNBENCH_SLURM_NODES:-2}"
GPUS="${DNNBENCH_SLURM_GPUS_PER_NODE:-4}"
CPUS="${DNNBENCH_SLURM_CPUS_PER_NODE:-8}"
MEM="${DNNBENCH_SLURM_MEM_PER_NODE:-8000}"
DIR="${DNNBENCH_SLURM_DIR:-/tmp/dnnbench-slurm}"
MAX_ARRAY="${DNNBENCH_SLURM_MAX_ARRAY_SIZE:-1001}"
ACCOUNTING="${DNNBENCH_SLURM_ACCOUNTING:-1}"
INSTALL="${DNNBENCH_SLURM_INSTALL:-1}"
TIMEOUT="${DNNBENCH_SLURM_TIMEOUT:-60}"
DB_PORT="${DNNBENCH_SLURM_DB_PORT:-13306}"
CMD=""

parse_args() {
    local opt val
    while (($#)); do
        opt="$1"
        val=""
        # Accept both "--opt value" and "--opt=value".
        case "$opt" in
            --*=*)
                val="${opt#*=}"
                opt="${opt%%=*}"
                ;;
        esac
        case "$opt" in
            --nodes | --gpus-per-node | --cpus-per-node | --mem-per-node | --dir | --max-array-size | --timeout | --db-port)
                if [[ -z "$val" ]]; then
                    (($# >= 2)) || die "$opt needs a value"
                    val="$2"
                    shift
                fi
                case "$opt" in
                    --nodes) NODES="$val" ;;
                    --gpus-per-node) GPUS="$val" ;;
                    --cpus-per-node) CPUS="$val" ;;
                    --mem-per-node) MEM="$val" ;;
                    --dir) DIR="$val" ;;
                    --max-array-size) MAX_ARRAY="$val" ;;
                    --timeout) TIMEOUT="$val" ;;
                    --db-port) DB_PORT="$val" ;;
                esac
                ;;
            --no-accounting) ACCOUNTING=0 ;;
            --no-install) INSTALL=0 ;;
            -h | --help)
                usage
                exit 0
                ;;
            up | down | status | env)
                [[ -z "$CMD" ]] || die "only one command allowed (got '$CMD' and '$opt')"
                CMD="$opt"
                ;;
            *)
                usage >&2
                die "unknown argument: $opt"
                ;;
        esac
        shift
    done
    [[ -n "$CMD" ]] || {
        usage >&2
        exit 2
    }
    local name flag
    for name in NODES:nodes GPUS:gpus-per-node CPUS:cpus-per-node MEM:mem-per-node \
        MAX_ARRAY:max-array-size TIMEOUT:timeout DB_PORT:db-port; do
        flag="--${name#*:}"
        name="${name%%:*}"
        [[ "${!name}" =~ ^[0-9]+$ ]] || die "$flag must be a non-negative integer, got '${!name}'"
    done
    ((NODES >= 1)) || die "--nodes must be >= 1"
    ((CPUS >= 1)) || die "--cpus-per-node must be >= 1"
    ((MAX_ARRAY >= 1)) || die "--max-array-size must be >= 1"
    case "$ACCOUNTING" in 0 | false | no) ACCOUNTING=0 ;; *) ACCOUNTING=1 ;; esac
    case "$INSTALL" in 0 | false | no) INSTALL=0 ;; *) INSTALL=1 ;; esac
    [[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
    DIR="${DIR%/}"
}

set_paths() {
    ETC="$DIR/etc"
    RUN="$DIR/run"
    LOGDIR="$DIR/log"
    STATE="$DIR/state"
    SPOOL="$DIR/spool"
    DEVDIR="$DIR/dev"
    MUNGE_DIR="$DIR/munge"
    DB_DIR="$DIR/mysql"
    CONF="$ETC/slurm.conf"
    MYCNF="$ETC/my.cnf"
    PARAMS="$ETC/params"
    MUNGE_KEY="$MUNGE_DIR/munge.key"
    MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
    MUNGE_PID="$MUNGE_DIR/munged.pid"
    CTLD_PID="$RUN/slurmctld.pid"
    DBD_PID="$RUN/slurmdbd.pid"
    DB_PID="$RUN/mariadb.pid"
    SSH_DIR="$DIR/ssh"
    SSH_KEY="$SSH_DIR/id_ed25519"
    SSHD_PID="$RUN/sshd.pid"
    # All our daemons and client calls read this config, whatever the
    # /etc/slurm symlink says; slurmdbd and slurmd also look for
    # slurmdbd.conf / gres.conf next to it.
    export SLURM_CONF="$CONF"
}

node_name() { printf 'node%d' "$1"; }

# ---------------------------------------------------------------- helpers ---
# Print the last lines of a log file to stderr, to explain a failure.
log_tail() {
    local f="$1" n="${2:-25}"
    if [[ -s "$f" ]]; then
        printf '[slurm-dev] ---- last %d lines of %s ----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
        printf '[slurm-dev] ----\n' >&2
    else
        printf '[slurm-dev] (log %s is empty or missing)\n' "$f" >&2
    fi
}

# A process that exists and is not a zombie. Daemons are re-parented to PID 1,
# and a container's PID 1 may reap late (seen: 1.3 s) or never: a zombie
# counts as gone, else every stop would wait for the timeout.
proc_running() {
    local state=""
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

pid_alive() {
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] && proc_running "$pid"
}

# wait_until SECONDS DESCRIPTION CMD... — poll CMD every 0.2 s.
wait_until() {
    local limit="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# wait_daemon PIDFILE SECONDS DESCRIPTION CMD... — like wait_until, but give
# up at once when the daemon has written its pid file and died (e.g. a fatal
# config error or a port in use) instead of waiting for the timeout.
wait_daemon() {
    local pidfile="$1" limit="$2" what="$3"
    shift 3
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if [[ -s "$pidfile" ]] && ! pid_alive "$pidfile"; then
            log "$what died while starting"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# Client commands get a hard time limit: a wedged daemon must not hang CI.
q() { timeout 10 "$@"; }

# ------------------------------------------------------------- packages ----
pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

ensure_packages() {
    local pkgs=("${PACKAGES_BASE[@]}") missing=() p
    ((ACCOUNTING)) && pkgs+=("${PACKAGES_ACCT[@]}")
    for p in "${pkgs[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    ((INSTALL)) || die "missing packages (and --no-install given): ${missing[*]}"
    log "installing ${missing[*]} (apt-get)…"
    # Package scripts must not start the system's own munge/MariaDB/slurm
    # services (they'd take the default sockets and ports). Docker images ship
    # a policy-rc.d that forbids it; add one for the duration if missing.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0 apt_log="$LOGDIR/apt.log"
    mkdir -p "$LOGDIR"
    log "(apt output goes to $apt_log)"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt/dpkg (CI images, parallel set-up) instead of failing.
    local apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # apt-get update only when the package lists are missing, or when the
    # install fails on them (stale lists point at removed .debs).
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q -o DPkg::Lock::Timeout=300 >>"$apt_log" 2>&1 || rc=$?
    fi
    if ((rc == 0)) && ! apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$apt_log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying…"
        {
            apt-get update -q -o DPkg::Lock::Timeout=300 >>"$apt_log" 2>&1 &&
                apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$apt_log" 2>&1
        } || rc=$?
    fi
    ((added_policy)) && rm -f "$policy"
    if ((rc != 0)); then
        log_tail "$apt_log"
        die "could not install: ${missing[*]}"
    fi
}

# --------------------------------------------------------------- configs ---
# The task plugin is part of the settings: a cluster started with another one is restarted by 'up'.
params_string() {
    printf 'nodes=%s gpus=%s cpus=%s mem=%s max_array=%s accounting=%s db_port=%s task=%s\n' \
        "$NODES" "$GPUS" "$CPUS" "$MEM" "$MAX_ARRAY" "$ACCOUNTING" "$DB_PORT" "$TASK_PLUGIN"
}

make_dirs() {
    mkdir -p "$DIR"
    # munged rejects keys and sockets under group/world-writable folders.
    chmod 755 "$DIR"
    mkdir -p "$ETC" "$RUN" "$LOGDIR" "$STATE" "$SPOOL" "$DEVDIR" "$MUNGE_DIR"
    chmod 755 "$ETC" "$RUN" "$LOGDIR"
    local i
    for ((i = 1; i <= NODES; i++)); do
        # slurmd does not create its spool folder itself.
        mkdir -p "$SPOOL/$(node_name "$i")"
    done
}

write_munge_key() {
    # munged must run as the munge user and refuses a key it doesn't own.
    chown munge:munge "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR" # 755: non-root job users may need the socket
    if [[ ! -s "$MUNGE_KEY" ]]; then
        (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none)
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
}

# Fake GPUs: GRES File= must be character devices (plain files are rejected
# and jobs then get no CUDA_VISIBLE_DEVICES). 195 is NVIDIA's major number;
# nothing ever opens them.
make_gpu_devices() {
    local i dev
    for ((i = 0; i < GPUS; i++)); do
        dev="$DEVDIR/nvidia$i"
        [[ -c "$dev" ]] && continue
        rm -f "$dev"
        if ! mknod -m 666 "$dev" c 195 "$i" 2>/dev/null; then
            # No CAP_MKNOD (e.g. rootless containers): a symlink to an existing
            # character device also passes Slurm's check.
            log "mknod not permitted; using a symlink to /dev/null for $dev"
            ln -s /dev/null "$dev"
        fi
    done
}

write_slurm_conf() {
    local host nodelist i
    # slurmctld insists that SlurmctldHost is this host's short name.
    host="$(hostname -s 2>/dev/null || uname -n)"
    host="${host%%.*}"
    nodelist="node[1-$NODES]"
    ((NODES == 1)) && nodelist="node1"
    local max_job_count=10000
    # Slurm requires MaxArraySize <= MaxJobCount.
    ((MAX_ARRAY + 1000 > max_job_count)) && max_job_count=$((MAX_ARRAY + 1000))
    local gres_node="" def_mem=$((MEM / CPUS))
    ((def_mem >= 1)) || def_mem=1
    ((GPUS > 0)) && gres_node="Gres=gpu:$GPUS"
    {
        cat <<EOF
# Generated by $PROG — edits are overwritten on the next 'up'.
ClusterName=$CLUSTER_NAME
# The host's own name (slurmctld checks it) with an address that needs no DNS.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root

AuthType=auth/munge
CredType=cred/munge
# Private munged socket; cred_expire=10 so a requeued job restarts in seconds
# instead of ~120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in the container: track processes by parent pid. task/affinity binds each task to
# the CPUs its step was given (sched_setaffinity, no cgroup needed), as sites' task plugins do.
# A node's abstract CPU i is this host's CPU i mod (real CPUs): a task of more CPUs than the host
# has still runs (on all of them), but --cpu-bind=cores (SLURM_CPU_BIND=cores) can only lay out
# tasks of at most that many CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
MpiDefault=none
SwitchType=switch/none
LaunchType=launch/slurm
MailProg=/bin/true

SchedulerType=sched/backfill
# Test every few seconds, not every 30/60 s: jobs that become eligible by time
# (a requeued job's BeginTime) would otherwise wait for the periodic pass.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Nodes may declare more CPUs/memory than the host has (else state 'inval').
SlurmdParameters=config_overrides
PreemptType=preempt/none
PreemptMode=OFF
JobRequeue=1
ReturnToService=2
# Ended jobs leave the controller after 5 min (sacct keeps them): they count against MaxJobCount meanwhile.
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=120
SlurmdTimeout=300
MessageTimeout=10
# With CR_Core_Memory a job without --mem would take the whole node's memory
# and serialise everything: default to an even share per CPU.
DefMemPerCPU=$def_mem
MaxArraySize=$MAX_ARRAY
MaxJobCount=$max_job_count

GresTypes=gpu
EOF
        if ((ACCOUNTING)); then
            cat <<EOF

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# Connections to slurmdbd ignore AuthInfo's socket: for them this key names
# the munged socket (else they look for /run/munge/munge.socket.2).
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
# Default 30 s leaves MaxRSS empty for short steps.
JobAcctGatherFrequency=task=1
EOF
        else
            cat <<EOF

AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
EOF
        fi
        printf '\n# Several slurmd on this host (MULTIPLE_SLURMD): one port each; node i at 127.0.0.i\n'
        printf '# (slurmd listens on every address) so that each node has an address of its own.\n'
        for ((i = 1; i <= NODES; i++)); do
            printf 'NodeName=%s NodeAddr=127.0.0.%d NodeHostname=%s Port=%d CPUs=%d RealMemory=%d %s State=UNKNOWN\n' \
                "$(node_name "$i")" "$i" "$host" $((SLURMD_BASE_PORT + i)) "$CPUS" "$MEM" "$gres_node"
        done
        printf 'PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP\n' "$nodelist"
        printf 'PartitionName=gpu Nodes=%s Default=NO MaxTime=INFINITE State=UP\n' "$nodelist"
    } >"$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    chmod 644 "$CONF"

    {
        printf '# Generated by %s.\nAutoDetect=off\n' "$PROG"
        if ((GPUS > 0)); then
            local files="$DEVDIR/nvidia0"
            ((GPUS > 1)) && files="$DEVDIR/nvidia[0-$((GPUS - 1))]"
            printf 'Name=gpu File=%s\n' "$files"
        fi
    } >"$ETC/gres.conf"
    chmod 644 "$ETC/gres.conf"
}

write_db_configs() {
    local pass="$1"
    cat >"$MYCNF" <<EOF
# Generated by $PROG: a private MariaDB for slurmdbd (no systemd).
[client]
socket=$DB_DIR/mysqld.sock
port=$DB_PORT
user=root

[mysqld]
user=root
datadir=$DB_DIR/data
socket=$DB_DIR/mysqld.sock
pid-file=$DB_PID
log-error=$LOGDIR/mariadb.log
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
# Smaller values make slurmdbd complain at start-up.
innodb_buffer_pool_size=512M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
# A throw-away database: trade durability for speed.
innodb_flush_log_at_trx_commit=0
innodb_doublewrite=0
skip-log-bin
EOF
    chmod 600 "$MYCNF"
    # slurmdbd refuses a config that is not 600 and owned by SlurmUser (root).
    (
        umask 077
        cat >"$ETC/slurmdbd.conf" <<EOF
# Generated by $PROG.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
# 'localhost', not the hostname: slurmdbd checks it against this host.
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOGDIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
# 127.0.0.1, not localhost: with localhost the client library looks for a
# socket at its built-in path and retries forever.
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    chown root:root "$ETC/slurmdbd.conf"
    chmod 600 "$ETC/slurmdbd.conf"
}

# Debian's clients read /etc/slurm/slurm.conf: point it at our config so plain
# `sbatch` works without SLURM_CONF. A foreign file there is kept aside once.
link_system_conf() {
    mkdir -p "${SYSTEM_CONF%/*}"
    if [[ -L "$SYSTEM_CONF" ]]; then
        [[ "$(readlink "$SYSTEM_CONF")" == "$CONF" ]] && return 0
    elif [[ -e "$SYSTEM_CONF" ]]; then
        log "moving existing $SYSTEM_CONF to $SYSTEM_CONF.dnnbench-orig"
        mv -f "$SYSTEM_CONF" "$SYSTEM_CONF.dnnbench-orig"
    fi
    ln -sfn "$CONF" "$SYSTEM_CONF"
}

# --------------------------------------------------------------- daemons ---
start_munge() {
    log "starting munged…"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
    # As root munged refuses the munge-owned key; it daemonises itself.
    if ! runuser -u munge -- /usr/sbin/munged \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" 2>>"$LOGDIR/munged.stderr"; then
        log_tail "$LOGDIR/munged.stderr"
        log_tail "$MUNGE_DIR/munged.log"
        die "munged failed to start"
    fi
    munge_ok() { munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
    wait_daemon "$MUNGE_PID" "$TIMEOUT" "munged" munge_ok || {
        log_tail "$MUNGE_DIR/munged.log"
        die "munged does not answer"
    }
}

start_mariadb() {
    log "starting MariaDB (port $DB_PORT)…"
    if [[ ! -d "$DB_DIR/data/mysql" ]]; then
        mkdir -p "$DB_DIR/data"
        log "initialising MariaDB data folder (once)…"
        mariadb-install-db --defaults-file="$MYCNF" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOGDIR/mariadb-install.log" 2>&1 || {
            log_tail "$LOGDIR/mariadb-install.log"
            die "mariadb-install-db failed"
        }
    fi
    rm -f "$DB_PID" "$DB_DIR/mysqld.sock"
    # mariadbd stays in the foreground: detach it into its own session so it
    # outlives this script and its caller's terminal.
    setsid /usr/sbin/mariadbd --defaults-file="$MYCNF" </dev/null >>"$LOGDIR/mariadb.stderr" 2>&1 &
    # setsid execs (this background job leads no process group), so $! is
    # mariadbd itself; record it now so an early death is noticed at once.
    echo "$!" >"$DB_PID"
    db_ok() { mariadb-admin --defaults-file="$MYCNF" ping >/dev/null 2>&1 && pid_alive "$DB_PID"; }
    wait_daemon "$DB_PID" "$TIMEOUT" "MariaDB" db_ok || {
        log_tail "$LOGDIR/mariadb.log"
        die "MariaDB did not start"
    }
}

# A fresh slurmctld (-c) starts job ids again at 1 while the database keeps
# the old jobs, so sacct would mix old and new records: empty the job data on
# every start. Dropping the whole database would work too, but slurmdbd then
# re-creates and ALTERs ~50 tables (~3.5 s); deleting the rows keeps the
# schema and the registered cluster.
reset_accounting_db() {
    local pass="$1" sql="" t tables
    sql+="CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
    sql+="CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';"
    sql+="GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    mariadb --defaults-file="$MYCNF" -e "$sql" 2>>"$LOGDIR/mariadb-client.log" || {
        log_tail "$LOGDIR/mariadb-client.log"
        die "could not create slurm_acct_db"
    }
    # Job, step, reservation, event, usage and transaction records of this
    # cluster; associations, TRES and the cluster row stay.
    tables="$(mariadb --defaults-file="$MYCNF" -N -B -e "SELECT table_name FROM information_schema.tables
        WHERE table_schema='slurm_acct_db' AND (table_name='txn_table' OR table_name IN
        ('${CLUSTER_NAME}_job_table','${CLUSTER_NAME}_step_table','${CLUSTER_NAME}_job_env_table',
         '${CLUSTER_NAME}_job_script_table','${CLUSTER_NAME}_suspend_table','${CLUSTER_NAME}_resv_table',
         '${CLUSTER_NAME}_event_table') OR table_name LIKE '${CLUSTER_NAME}\\_%usage\\_%')" \
        2>>"$LOGDIR/mariadb-client.log")" || die "could not list slurm_acct_db tables"
    [[ -n "$tables" ]] || return 0
    sql=""
    for t in $tables; do sql+="DELETE FROM slurm_acct_db.\`$t\`;"; done
    # slurmctld registers itself again; a stale ControlHost would let
    # sacct_ok pass before it has.
    sql+="UPDATE slurm_acct_db.cluster_table SET control_host='', control_port=0 WHERE name='$CLUSTER_NAME';"
    mariadb --defaults-file="$MYCNF" -e "$sql" 2>>"$LOGDIR/mariadb-client.log" || {
        log_tail "$LOGDIR/mariadb-client.log"
        die "could not empty the job records in slurm_acct_db"
    }
}

start_slurmdbd() {
    log "starting slurmdbd…"
    rm -f "$DBD_PID"
    slurmdbd >>"$LOGDIR/slurmdbd.stderr" 2>&1 || {
        log_tail "$LOGDIR/slurmdbd.log"
        die "slurmdbd failed to start"
    }
    dbd_ok() { q sacctmgr -n -P show cluster >/dev/null 2>&1; }
    wait_daemon "$DBD_PID" "$TIMEOUT" "slurmdbd" dbd_ok || {
        log_tail "$LOGDIR/slurmdbd.log"
        die "slurmdbd does not answer"
    }
    if [[ -n "$(q sacctmgr -n -P show cluster "$CLUSTER_NAME" format=Cluster 2>/dev/null)" ]]; then
        return 0
    fi
    log "registering cluster '$CLUSTER_NAME' in accounting (first start: ~3 s)…"
    q sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null 2>>"$LOGDIR/sacctmgr.stderr" || {
        log_tail "$LOGDIR/sacctmgr.stderr"
        log_tail "$LOGDIR/slurmdbd.log"
        die "sacctmgr add cluster failed"
    }
}

start_slurmctld() {
    log "starting slurmctld…"
    rm -f "$CTLD_PID"
    # -c -i: start from an empty state (we also wiped the state folder).
    slurmctld -c -i -f "$CONF" >>"$LOGDIR/slurmctld.stderr" 2>&1 || {
        log_tail "$LOGDIR/slurmctld.stderr"
        log_tail "$LOGDIR/slurmctld.log"
        die "slurmctld failed to start"
    }
    ctld_ok() { q scontrol ping 2>/dev/null | grep -q 'is UP'; }
    wait_daemon "$CTLD_PID" "$TIMEOUT" "slurmctld" ctld_ok || {
        log_tail "$LOGDIR/slurmctld.log"
        die "slurmctld does not answer"
    }
}

start_slurmds() {
    local i n
    for ((i = 1; i <= NODES; i++)); do
        n="$(node_name "$i")"
        log "starting slurmd $n (port $((SLURMD_BASE_PORT + i)))…"
        rm -f "$RUN/slurmd-$n.pid"
        slurmd -f "$CONF" -N "$n" >>"$LOGDIR/slurmd-$n.stderr" 2>&1 || {
            log_tail "$LOGDIR/slurmd-$n.stderr"
            log_tail "$LOGDIR/slurmd-$n.log"
            die "slurmd $n failed to start"
        }
    done
}

# sshd on the addresses of nodes 2.. with its own host key and one client key:
# what a cluster's compute nodes offer each other, on this one host.
start_sshd() {
    ((NODES >= 2)) || return 0
    mkdir -p "$SSH_DIR" /run/sshd
    chmod 700 "$SSH_DIR"
    [[ -s "$SSH_DIR/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C dnnbench-dev-host -f "$SSH_DIR/host_ed25519"
    [[ -s "$SSH_KEY" ]] || ssh-keygen -q -t ed25519 -N '' -C dnnbench-dev-cluster -f "$SSH_KEY"
    cp "$SSH_KEY.pub" "$SSH_DIR/authorized_keys"
    chmod 600 "$SSH_DIR/authorized_keys"
    local i
    {
        printf '# Generated by %s: ssh between the dev cluster nodes.\n' "$PROG"
        for ((i = 2; i <= NODES; i++)); do printf 'ListenAddress 127.0.0.%d:%d\n' "$i" "$SSH_PORT"; done
        printf 'HostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n' "$SSH_DIR/host_ed25519" "$SSHD_PID" "$SSH_DIR/authorized_keys"
        printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n'
        # The scratch folder sits under /tmp (world-writable), which StrictModes refuses.
        printf 'UsePAM no\nPrintMotd no\nStrictModes no\n'
    } >"$ETC/sshd_config"
    log "starting sshd (127.0.0.2..127.0.0.$NODES port $SSH_PORT)…"
    rm -f "$SSHD_PID"
    /usr/sbin/sshd -f "$ETC/sshd_config" -E "$LOGDIR/sshd.log" || {
        log_tail "$LOGDIR/sshd.log"
        die "sshd failed to start"
    }
    # Up = a login with the client key works, as horovodrun will log in.
    ssh_ok() {
        q ssh -p "$SSH_PORT" -i "$SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.2 true 2>/dev/null
    }
    wait_daemon "$SSHD_PID" "$TIMEOUT" "sshd" ssh_ok || {
        log_tail "$LOGDIR/sshd.log"
        die "sshd does not accept the dev cluster's key"
    }
}

nodes_idle() {
    local states
    states="$(q sinfo -h -N -p debug -o '%N %T' 2>/dev/null)" || return 1
    [[ "$(grep -c ' idle$' <<<"$states")" -eq "$NODES" ]]
}

# sacct prints an error but exits 0 when slurmdbd is away: require a clean
# stderr, and that slurmctld has registered with slurmdbd (ControlHost set),
# else job records would not arrive.
sacct_ok() {
    local err host
    err="$(q sacct -n -X -a -S now-1hours 2>&1 >/dev/null)" || return 1
    [[ -z "$err" ]] || return 1
    host="$(q sacctmgr -n -P show cluster "$CLUSTER_NAME" format=ControlHost 2>/dev/null)" || return 1
    [[ -n "$host" ]]
}

# ---------------------------------------------------------------- status ---
daemon_pidfiles() {
    local f
    for f in "$RUN"/slurmd-*.pid; do [[ -e "$f" ]] && printf '%s\n' "$f"; done
    printf '%s\n' "$CTLD_PID"
    if [[ -e "$DBD_PID" || -e "$DB_PID" ]]; then printf '%s\n%s\n' "$DBD_PID" "$DB_PID"; fi
    if [[ -e "$SSHD_PID" ]]; then printf '%s\n' "$SSHD_PID"; fi
    printf '%s\n' "$MUNGE_PID"
}

# Up = every daemon recorded for the current settings is alive and every node
# is idle/allocated (responding). Sets NOT_UP_REASON when not.
NOT_UP_REASON=""
cluster_healthy() {
    NOT_UP_REASON=""
    local i f names=(munged slurmctld) files=("$MUNGE_PID" "$CTLD_PID")
    for ((i = 1; i <= NODES; i++)); do
        names+=("slurmd $(node_name "$i")")
        files+=("$RUN/slurmd-$(node_name "$i").pid")
    done
    if ((ACCOUNTING)); then
        names+=(MariaDB slurmdbd)
        files+=("$DB_PID" "$DBD_PID")
    fi
    if ((NODES >= 2)); then
        names+=(sshd)
        files+=("$SSHD_PID")
    fi
    for i in "${!files[@]}"; do
        f="${files[$i]}"
        pid_alive "$f" || NOT_UP_REASON+="${names[$i]} not running; "
    done
    if [[ -z "$NOT_UP_REASON" ]]; then
        if ! q scontrol ping 2>/dev/null | grep -q 'is UP'; then
            NOT_UP_REASON="slurmctld does not answer; "
        else
            local bad
            bad="$(q sinfo -h -N -p debug -o '%N=%T' 2>/dev/null | grep -Ev '=(idle|mixed|allocated|completing)$' | tr '\n' ' ')" || true
            [[ -z "$bad" ]] || NOT_UP_REASON="nodes not usable: $bad; "
        fi
    fi
    NOT_UP_REASON="${NOT_UP_REASON%; }"
    [[ -z "$NOT_UP_REASON" ]]
}

# Restore the settings a running cluster was started with (status/down must
# not depend on the caller repeating the same flags).
load_params() {
    [[ -s "$PARAMS" ]] || return 1
    local kv k v
    for kv in $(<"$PARAMS"); do
        k="${kv%%=*}"
        v="${kv#*=}"
        case "$k" in
            nodes) NODES="$v" ;;
            gpus) GPUS="$v" ;;
            cpus) CPUS="$v" ;;
            mem) MEM="$v" ;;
            max_array) MAX_ARRAY="$v" ;;
            accounting) ACCOUNTING="$v" ;;
            db_port) DB_PORT="$v" ;;
        esac
    done
}

# ------------------------------------------------------------------ down ---
# Stop one daemon by pid file: TERM, then KILL after the timeout.
stop_pidfile() {
    local pidfile="$1" name="$2" pid deadline
    [[ -s "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [[ -n "$pid" ]] && proc_running "$pid"; then
        log "stopping $name (pid $pid)…"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + TIMEOUT))
        while proc_running "$pid"; do
            if ((SECONDS >= deadline)); then
                log "$name did not stop in ${TIMEOUT}s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

# Process helpers read /proc directly: a bare bookworm image has no procps.
# Fills the global PPID_OF map: pid -> parent pid.
declare -A PPID_OF=()
scan_procs() {
    PPID_OF=()
    local st line
    for st in /proc/[0-9]*/status; do
        while read -r line; do
            if [[ "$line" == PPid:* ]]; then
                st="${st#/proc/}"
                PPID_OF["${st%/status}"]="${line#PPid:}"
                break
            fi
        done <"$st" 2>/dev/null || true
    done
}

# pid and all its descendants (needs scan_procs), children first.
descendants() {
    local p
    for p in "${!PPID_OF[@]}"; do
        ((PPID_OF[$p] == $1)) && descendants "$p"
    done
    printf '%s\n' "$1"
}

# slurmstepd outlives slurmd by design. Find the ones of this cluster (they
# hold our slurmd log open) and kill them with their job processes.
kill_stray_stepds() {
    local c p fd pids=()
    for c in /proc/[0-9]*/comm; do
        [[ "$(cat "$c" 2>/dev/null || true)" == slurmstepd ]] || continue
        p="${c#/proc/}"
        p="${p%/comm}"
        for fd in /proc/"$p"/fd/*; do
            if [[ "$(readlink "$fd" 2>/dev/null || true)" == "$LOGDIR"/* ]]; then
                pids+=("$p")
                break
            fi
        done
    done
    ((${#pids[@]})) || return 0
    log "killing ${#pids[@]} leftover slurmstepd process tree(s)…"
    scan_procs
    for p in "${pids[@]}"; do
        # shellcheck disable=SC2046 # one pid per word is intended
        kill -KILL $(descendants "$p") 2>/dev/null || true
    done
}

do_down() {
    local any=0 f
    for f in $(daemon_pidfiles); do
        pid_alive "$f" && any=1
    done
    if ((!any)); then
        log "cluster in $DIR is not running"
        rm -f "$RUN"/*.pid "$MUNGE_PID" "$PARAMS"
        kill_stray_stepds
        return 0
    fi
    # Cancel jobs first so slurmd/slurmstepd end the job processes themselves.
    if pid_alive "$CTLD_PID"; then
        local jobs
        jobs="$(q squeue -h -o '%A' 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            log "cancelling $(wc -w <<<"$jobs") job(s)…"
            # shellcheck disable=SC2086 # one job id per word is intended
            q scancel --full $jobs 2>/dev/null || true
            jobs_gone() { [[ -z "$(q squeue -h -o '%A' 2>/dev/null || true)" ]]; }
            wait_until $((TIMEOUT < 15 ? TIMEOUT : 15)) "jobs to end" jobs_gone || true
        fi
    fi
    for f in "$RUN"/slurmd-*.pid; do
        [[ -e "$f" ]] || continue
        local n="${f##*/slurmd-}"
        stop_pidfile "$f" "slurmd ${n%.pid}"
    done
    stop_pidfile "$CTLD_PID" slurmctld
    [[ -e "$SSHD_PID" ]] && stop_pidfile "$SSHD_PID" sshd
    stop_pidfile "$DBD_PID" slurmdbd
    stop_pidfile "$DB_PID" MariaDB
    stop_pidfile "$MUNGE_PID" munged
    kill_stray_stepds
    rm -f "$PARAMS"
    log "cluster in $DIR is down"
}

# -------------------------------------------------------------------- up ---
do_up() {
    [[ $EUID -eq 0 ]] || die "must run as root (starts daemons, mknod, /etc/slurm symlink)"
    local start_ns
    start_ns="$(date +%s%N)"
    if [[ -s "$PARAMS" ]]; then
        if [[ "$(params_string)" != "$(<"$PARAMS")" ]]; then
            log "cluster in $DIR runs with other settings ($(tr -d '\n' <"$PARAMS")); restarting"
        elif cluster_healthy; then
            link_system_conf
            log "cluster already up in $DIR ($(params_string | tr -d '\n')); nothing to do"
            return 0
        else
            log "cluster in $DIR is only partly up ($NOT_UP_REASON); restarting it"
        fi
    fi
    # Stop whatever a previous (possibly half-started) run left behind, with
    # the settings it was started with.
    (
        load_params || true
        do_down
    ) 2>&1 | grep -v 'is not running' >&2 || true

    ensure_packages
    make_dirs
    write_munge_key
    make_gpu_devices
    # A fresh start: no saved jobs/nodes, no stale spool.
    rm -rf "${STATE:?}"/* "${SPOOL:?}"/*/*
    local i
    for ((i = 1; i <= NODES; i++)); do mkdir -p "$SPOOL/$(node_name "$i")"; done
    rm -f "$PARAMS"
    # On any failure below, stop what was started and leave logs for reading.
    trap 'rc=$?; if ((rc != 0)); then log "up failed; stopping partial cluster (logs in $LOGDIR)"; do_down 2>/dev/null || true; fi' EXIT

    write_slurm_conf # before slurmdbd: sacctmgr refuses to run without it
    link_system_conf
    start_munge
    if ((ACCOUNTING)); then
        local pass
        pass="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
        write_db_configs "$pass"
        start_mariadb
        reset_accounting_db "$pass"
        start_slurmdbd
    else
        rm -f "$ETC/slurmdbd.conf"
    fi
    start_slurmctld
    start_slurmds
    start_sshd
    log "waiting for $NODES node(s) to be idle…"
    if ! wait_until "$TIMEOUT" "nodes to be idle" nodes_idle; then
        q sinfo -N -l >&2 || true
        log_tail "$LOGDIR/slurmctld.log"
        for ((i = 1; i <= NODES; i++)); do log_tail "$LOGDIR/slurmd-$(node_name "$i").log" 10; done
        die "nodes did not become idle"
    fi
    if ((ACCOUNTING)); then
        log "waiting for sacct to answer…"
        wait_until "$TIMEOUT" "sacct" sacct_ok || {
            log_tail "$LOGDIR/slurmdbd.log"
            log_tail "$LOGDIR/slurmctld.log"
            die "sacct does not answer"
        }
    fi
    params_string >"$PARAMS"
    trap - EXIT
    local ms=$((($(date +%s%N) - start_ns) / 1000000))
    log "cluster up in $DIR: $NODES node(s) x $CPUS CPUs, $GPUS GPUs, ${MEM} MB; accounting=$ACCOUNTING (${ms} ms)"
    print_env >&2
}

# ---------------------------------------------------------------- status ---
print_env() {
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export DNNBENCH_SLURM_DIR=%q\n' "$DIR"
    # For cluster.ssh_port / cluster.ssh_identity_file: ssh between the nodes.
    printf 'export DNNBENCH_SLURM_SSH_PORT=%d\n' "$SSH_PORT"
    printf 'export DNNBENCH_SLURM_SSH_KEY=%q\n' "$SSH_KEY"
}

do_status() {
    load_params || {
        log "cluster in $DIR is not up (no $PARAMS)"
        return 1
    }
    local ok=0
    cluster_healthy || {
        ok=1
        echo "not up: $NOT_UP_REASON"
    }
    q sinfo -N -o '%N %P %T %c %m %G' || ok=1
    if ((ACCOUNTING)); then
        if sacct_ok; then
            echo "sacct: answers"
        else
            echo "sacct: NOT answering"
            ok=1
        fi
    else
        echo "sacct: accounting disabled (--no-accounting)"
    fi
    if ((ok == 0)); then
        echo "cluster: up ($DIR)"
    else
        echo "cluster: NOT up ($DIR)"
    fi
    return "$ok"
}

main() {
    parse_args "$@"
    set_paths
    case "$CMD" in
        up) do_up ;;
        down)
            load_params || true
            do_down
            ;;
        status) do_status ;;
        env) print_env ;;
    esac
}

main "$@"
