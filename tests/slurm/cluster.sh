#!/usr/bin/env bash
# Throwaway single-node SLURM cluster (Slurm 22.05 from Debian 12) for the SLURM test suite and CI.
#
#   bash tests/slurm/cluster.sh up       # install what is missing, write config, start daemons, wait for node c1 idle
#   bash tests/slurm/cluster.sh down     # stop every daemon this script started (fine when nothing runs)
#   bash tests/slurm/cluster.sh status   # daemon state + sinfo
#   eval "$(bash tests/slurm/cluster.sh env)"   # export SLURM_CONF=... for sbatch/squeue/sacct/scontrol
#
# Everything lives in $SLURM_LAB (default /tmp/ddpm-hpc-slurm): slurm.conf, gres.conf, slurmdbd.conf (0600),
# state, logs, pid files and a private MariaDB data directory (so a fresh lab never sees old job ids in sacct).
# /etc/slurm is NOT written: clients and daemons read $SLURM_CONF, and slurmd/slurmdbd find gres.conf and
# slurmdbd.conf next to it. Shared with the host: the Debian packages, /etc/munge/munge.key and munged's socket
# (/run/munge); a munged that is already running is reused and left running by `down`.
# One cluster per machine: ports 6817-6819 (slurm) and $SLURM_LAB_DB_PORT (MariaDB, default 3307) are fixed.
# Needs root for up/down (daemons run as root; jobs run as the submitting user).
set -euo pipefail

LAB=$(realpath -m -- "${SLURM_LAB:-/tmp/ddpm-hpc-slurm}")
TIMEOUT=${SLURM_LAB_TIMEOUT:-30}          # seconds per daemon to become ready
DB_PORT=${SLURM_LAB_DB_PORT:-3307}
CONF=$LAB/slurm.conf
RUN=$LAB/run LOG=$LAB/log DB=$LAB/mysql
export SLURM_CONF=$CONF
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; down uses the reverse

say() { echo "cluster.sh: $*"; }
die() { echo "cluster.sh: error: $*" >&2; exit 1; }
tail_log() { # file...: print the last lines of each existing, non-empty log to stderr
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "----- last 25 lines of $f -----" >&2
        tail -n 25 -- "$f" >&2
    done
}
need_root() { [[ $EUID -eq 0 ]] || die "'$1' must run as root (it starts system daemons)"; }
ms_since() { echo $(( (${EPOCHREALTIME/./} - $1) / 1000 )); }   # $1 = ${EPOCHREALTIME/./} at start

# Pid files may vanish at any time: the daemons delete their own (same path) when they exit.
read_pid() { tr -dc 0-9 2>/dev/null <"$1" || true; }
# A pid file names a live process (not a zombie: PID 1 here reaps late) whose command is $2.
pid_alive() {
    local pid st
    pid=$(read_pid "$1")
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ $st != Z && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
pidfile() { echo "$RUN/$1.pid"; }
is_up() { pid_alive "$(pidfile "$1")" "$1"; }
# A daemon just started may still be exec-ing through setsid/setpriv, and it rewrites its pid file itself,
# so start-up checks use the pid from $! (LAST_PID) and only ask whether it has exited.
pid_running() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z ]]
}

# wait_ready NAME LOG... -- CMD...: poll CMD until it succeeds; fail early (printing the LOGs) if the daemon
# just started (LAST_PID) died, or after $TIMEOUT s.
wait_ready() {
    local name=$1 logs=() deadline=$((SECONDS + TIMEOUT))
    shift
    while [[ $1 != -- ]]; do logs+=("$1"); shift; done
    shift
    until "$@" >/dev/null 2>&1; do
        if ! pid_running "$LAST_PID"; then
            tail_log "${logs[@]}"
            die "$name exited during start-up (logs above)"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "${logs[@]}"
            die "$name not ready after ${TIMEOUT}s (check: $*)"
        fi
        sleep 0.1
    done
}

# start NAME CMD...: run a foreground daemon in its own session; its pid goes to $RUN/NAME.pid and LAST_PID.
start() {
    local name=$1
    shift
    setsid "$@" >>"$LOG/$name.stderr" 2>&1 </dev/null &
    LAST_PID=$!
    echo "$LAST_PID" >"$(pidfile "$name")"
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_up() { [[ $(timeout 5 scontrol ping 2>/dev/null) == *'is UP'* ]]; }
node_state() { timeout 5 sinfo -h -n c1 -o %T 2>/dev/null; }
# port_free NAME PORT: fail fast when something else (another cluster?) already listens on a port we need.
port_free() {
    ! tcp_open 127.0.0.1 "$2" ||
        die "cannot start $1: 127.0.0.1:$2 is already in use (another Slurm/MariaDB? see: ss -ltnp 'sport = :$2')"
}
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }

install_packages() {
    local p missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    local t0=${EPOCHREALTIME/./}
    mkdir -p "$LOG"
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}"
    } >"$LOG/apt.log" 2>&1 || { tail_log "$LOG/apt.log"; die "apt-get install ${PKGS[*]} failed"; }
    say "installed ${missing[*]} ($(ms_since "$t0") ms)"
}

# write_file PATH MODE: stdin -> PATH (mode always enforced), replaced only if the content changed; then returns 1.
write_file() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        chmod "$2" "$1"
        return 0
    fi
    mv -f "$tmp" "$1"
    return 1
}

write_config() {
    local hw cpus mem changed=0
    # slurmd -C reports the hardware without reading any slurm.conf.
    hw=$(SLURM_CONF=/dev/null /usr/sbin/slurmd -C 2>&1) || die "slurmd -C failed: $hw"
    cpus=$(grep -o 'CPUs=[0-9]*' <<<"$hw" | cut -d= -f2)
    mem=$(grep -o 'RealMemory=[0-9]*' <<<"$hw" | cut -d= -f2)
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C' output: $hw"
    mem=$((mem * 9 / 10))

    write_file "$CONF" 0644 <<EOF || changed=1
# Written by tests/slurm/cluster.sh -- throwaway single-node cluster. Use: export SLURM_CONF=$CONF
ClusterName=lab
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# Requeued jobs become eligible cred_expire+1 s after the requeue (default 120 s; 5 is the minimum).
AuthInfo=cred_expire=5
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$LAB/state/ctld
SlurmdSpoolDir=$LAB/state/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
SchedulerType=sched/backfill
# Without this, requeued jobs wait for the 60 s / 30 s scheduler passes.
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# Slurm 22.05: pre-emption sends the job's --signal (USR2 from submitit) instead of SIGTERM.
SlurmctldParameters=preempt_send_user_signal
GresTypes=gpu
NodeName=c1 NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=c1 Default=YES MaxTime=60 DefaultTime=10 PriorityTier=1 PreemptMode=REQUEUE GraceTime=20 State=UP
PartitionName=gpu Nodes=c1 Default=NO MaxTime=60 DefaultTime=10 PriorityTier=10 PreemptMode=OFF State=UP
EOF
    # A GPU line without File= is dropped by slurmd and the node goes INVAL; /dev/null stands in for the device.
    write_file "$LAB/gres.conf" 0644 <<EOF || changed=1
AutoDetect=off
NodeName=c1 Name=gpu File=/dev/null Count=1
EOF
    # slurmdbd refuses a slurmdbd.conf readable by group/others.
    write_file "$LAB/slurmdbd.conf" 0600 <<EOF || changed=1
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmpass
StorageLoc=slurm_acct_db
EOF
    if ((changed)) && is_up slurmctld; then
        say "warning: config changed while daemons run; run 'down' then 'up' to apply it"
    fi
}

up_munged() {
    if munge_ok; then
        is_up munged || say "munged: reusing the munged already running (not managed here)"
        return 0
    fi
    install -d -o munge -g munge -m 0755 /run/munge   # systemd's RuntimeDirectory= normally makes it
    # munged refuses to run as root (its log/key belong to munge); setpriv execs, so $! is munged itself.
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_ready munged "$LOG/munged.stderr" "/var/log/munge/munged.log" -- munge_ok
}

up_mariadbd() {
    local sock=$DB/mysqld.sock
    if ! is_up mariadbd; then
        install -d -o mysql -g mysql -m 0750 "$DB"
        if [[ ! -d $DB/data/mysql ]]; then
            rm -rf "$DB/data"
            mariadb-install-db --no-defaults --datadir="$DB/data" --user=mysql --skip-test-db \
                --auth-root-authentication-method=socket --innodb-log-file-size=8M >"$LOG/mariadb-install-db.log" 2>&1 ||
                { tail_log "$LOG/mariadb-install-db.log"; die "mariadb-install-db failed"; }
        fi
        port_free mariadbd "$DB_PORT"
        : >>"$LOG/mariadbd.log"
        chown mysql:mysql "$LOG/mariadbd.log"
        start mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$sock" \
            --pid-file="$DB/mariadbd.pid" --log-error="$LOG/mariadbd.log" --bind-address=127.0.0.1 \
            --port="$DB_PORT" --skip-name-resolve --innodb-lock-wait-timeout=900 --innodb-log-file-size=8M
        wait_ready mariadbd "$LOG/mariadbd.stderr" "$LOG/mariadbd.log" -- \
            mariadb-admin --no-defaults --socket="$sock" ping
    fi
    mariadb --no-defaults --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpass';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>"$LOG/mariadb-client.err" ||
        { tail_log "$LOG/mariadb-client.err" "$LOG/mariadbd.log"; die "cannot create the MariaDB user 'slurm'"; }
}

cmd_up() {
    need_root up
    local t0=${EPOCHREALTIME/./}
    install_packages
    mkdir -p "$RUN" "$LOG" "$LAB/state/ctld" "$LAB/state/d"
    chmod 0755 "$LAB"
    write_config
    up_munged
    up_mariadbd
    if ! is_up slurmdbd; then
        port_free slurmdbd 6819
        start slurmdbd /usr/sbin/slurmdbd -D
        wait_ready slurmdbd "$LOG/slurmdbd.stderr" "$LOG/slurmdbd.log" -- tcp_open 127.0.0.1 6819
    fi
    if ! is_up slurmctld; then
        port_free slurmctld 6817
        start slurmctld /usr/sbin/slurmctld -D
        wait_ready slurmctld "$LOG/slurmctld.stderr" "$LOG/slurmctld.log" -- ctld_up
    fi
    local slurmd_pid=
    if ! is_up slurmd; then
        port_free slurmd 6818
        start slurmd /usr/sbin/slurmd -D -N c1
        slurmd_pid=$LAST_PID
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until node_ready; do
        [[ -z $slurmd_pid ]] || pid_running "$slurmd_pid" || { tail_log "$LOG/slurmd.stderr" "$LOG/slurmd.log"; die "slurmd exited during start-up"; }
        if ((SECONDS >= deadline)); then
            tail_log "$LOG/slurmd.stderr" "$LOG/slurmd.log" "$LOG/slurmctld.log"
            die "node c1 not idle after ${TIMEOUT}s: $(timeout 5 sinfo -h -n c1 -o '%T %E' 2>&1 || true)"
        fi
        sleep 0.1
    done
    say "up in $(ms_since "$t0") ms: node c1 $(node_state); use: export SLURM_CONF=$CONF"
}

stop() { # NAME...: SIGTERM the daemons we started, wait for them to exit (SIGKILL after 30 s)
    local name pids=() names=() i deadline=$((SECONDS + 30))
    for name in "$@"; do
        if is_up "$name"; then
            pids+=("$(read_pid "$(pidfile "$name")")")
            names+=("$name")
            kill -TERM "${pids[-1]}" 2>/dev/null || true
        else
            rm -f "$(pidfile "$name")"
        fi
    done
    for i in "${!names[@]}"; do
        while is_up "${names[i]}"; do
            if ((SECONDS >= deadline)); then
                say "warning: ${names[i]} (pid ${pids[i]}) ignored SIGTERM for 30 s; sending SIGKILL"
                kill -KILL "${pids[i]}" 2>/dev/null || true
                sleep 0.2
                break
            fi
            sleep 0.1
        done
        rm -f "$(pidfile "${names[i]}")"
    done
}

cmd_down() {
    need_root down
    local t0=${EPOCHREALTIME/./} n
    if [[ ! -d $RUN ]]; then
        say "nothing to stop (no $RUN)"
        return 0
    fi
    stop slurmd slurmctld   # slurmctld flushes pending accounting records to slurmdbd on shutdown
    stop slurmdbd
    stop mariadbd munged
    n=$(pgrep -c -x slurmstepd || true)
    ((n == 0)) || say "warning: $n slurmstepd process(es) still run jobs; 'up' reattaches them, or kill them"
    say "down in $(ms_since "$t0") ms"
}

cmd_status() {
    local name pid any=0
    for name in "${DAEMONS[@]}"; do
        if is_up "$name"; then
            pid=$(read_pid "$(pidfile "$name")")
            printf '%-10s up (pid %s)\n' "$name" "$pid"
            any=1
        elif [[ $name == munged ]] && munge_ok 2>/dev/null; then
            printf '%-10s up (not started by cluster.sh)\n' "$name"
        else
            printf '%-10s down\n' "$name"
        fi
    done
    echo "SLURM_CONF=$CONF"
    if ((any)) && is_up slurmctld; then
        timeout 10 sinfo || echo "sinfo failed (rc $?)"
    fi
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) printf 'export SLURM_CONF=%q\n' "$CONF" ;;
*)
    echo "usage: bash $0 up|down|status|env   (lab folder: \$SLURM_LAB, default /tmp/ddpm-hpc-slurm)" >&2
    exit 2
    ;;
esac
