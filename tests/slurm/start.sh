#!/usr/bin/env bash
# start.sh - install (if missing) and start a REAL single-node SLURM cluster on this
# machine (Debian 12, root, no systemd needed), then wait until the node is idle.
# Idempotent: re-running with everything up only re-checks (about 1 s).
#
# Knobs (environment):
#   SLURM_LOCAL_ACCOUNTING=1|0  slurmdbd + MariaDB, so `sacct` works (submitit needs it)  [1]
#   SLURM_LOCAL_GPUS=N          fake GPUs advertised as GRES gpu:N (0 = none)             [2]
#   SLURM_LOCAL_MEM_MB=N        node RealMemory in MB                 [min(20000, detected-1024)]
#   SLURM_LOCAL_TIMEOUT=S       how long to wait for daemons / node idle                  [90]
#
# Daemons started here are recorded in /run/slurm-local/started/<name>.pid;
# stop.sh stops exactly those (by PID). Daemons found already running
# (e.g. a munged started by someone else) are reused and not recorded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TPL="$HERE/templates"
RUN=/run/slurm-local
LOG=/var/log/slurm-local
SPOOL=/var/spool/slurm-local
MARK="$RUN/started"
ACCT="${SLURM_LOCAL_ACCOUNTING:-1}"
GPUS="${SLURM_LOCAL_GPUS:-2}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-90}"
DBPASS="slurm-local-test"   # local-only MariaDB account, reachable via the unix socket / localhost
T_START=$(date +%s.%N)

log() { printf '[slurm-local %s] %s\n' "$(date +%T)" "$*"; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# alive PIDFILE COMM: the pid in PIDFILE is a live process named COMM
alive() {
    local f=$1 c=$2 p
    [[ -s $f ]] || return 1
    p=$(<"$f")
    [[ -r /proc/$p/comm && "$(</proc/$p/comm)" == "$c" ]]
}
# wait_for SECONDS CMD...: retry CMD every 0.2 s
wait_for() {
    local t=$1; shift
    local end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < end )) || return 1
        sleep 0.2
    done
}
mark() { cp "$2" "$MARK/$1.pid"; }   # mark NAME PIDFILE
start_slurm_daemon() {  # start_slurm_daemon NAME TIMEOUT READY-CHECK...: start /usr/sbin/NAME unless it runs
    local name=$1 timeout=$2; shift 2
    if alive "$RUN/$name.pid" "$name"; then
        log "$name already running"
        return
    fi
    "/usr/sbin/$name"
    wait_for "$timeout" "$@" || { tail "$LOG/$name.log"; die "$name did not start"; }
    mark "$name" "$RUN/$name.pid"
    log "started $name (pid $(<"$MARK/$name.pid"))"
}

# ---------------------------------------------------------------- 1. install
pkgs=(munge slurmctld slurmd slurm-client)
[[ $ACCT == 1 ]] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    t0=$(date +%s)
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then apt-get update -qq; fi
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-local-apt.log 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-local-apt.log 2>&1 \
            || { tail -20 /tmp/slurm-local-apt.log; die "apt-get install failed"; }
    fi
    log "apt install took $(( $(date +%s) - t0 )) s"
fi

mkdir -p "$RUN" "$MARK" "$LOG" "$SPOOL/ctld" "$SPOOL/d" /etc/slurm

# ---------------------------------------------------------------- 2. config
HOST=$(hostname -s)
hw=$(slurmd -C | head -1)            # NodeName=... CPUs=.. Boards=.. SocketsPerBoard=.. RealMemory=..
detected_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
MEM="${SLURM_LOCAL_MEM_MB:-$(( detected_mem - 1024 < 20000 ? detected_mem - 1024 : 20000 ))}"
NODELINE="$(sed -e "s/RealMemory=[0-9]*/RealMemory=$MEM/" <<<"$hw") NodeAddr=127.0.0.1"

if [[ $ACCT == 1 ]]; then
    ACCT_STORAGE=accounting_storage/slurmdbd
    ACCT_EXTRA='AccountingStorageHost=localhost\nAccountingStorageTRES=gres/gpu'   # awk turns \n into a newline
    JOBACCT=jobacct_gather/linux
else
    ACCT_STORAGE=accounting_storage/none
    ACCT_EXTRA=""
    JOBACCT=jobacct_gather/none
fi

render() {  # render TEMPLATE -> stdout
    sed -e "s#@HOST@#$HOST#g" -e "s#@RUN@#$RUN#g" -e "s#@LOG@#$LOG#g" \
        -e "s#@ACCT_STORAGE@#$ACCT_STORAGE#" -e "s#@JOBACCT_GATHER@#$JOBACCT#" \
        -e "s#@DBPASS@#$DBPASS#" -e "s#@GPUS@#$GPUS#g" -e "s#@GPUMAX@#$(( GPUS > 0 ? GPUS - 1 : 0 ))#g" "$1" |
    awk -v extra="$ACCT_EXTRA" -v node="$NODELINE" -v gpus="$GPUS" '
        /^@ACCT_EXTRA@$/ { if (extra != "") print extra; next }
        /^@NODELINE@/    { sub(/^@NODELINE@/, node); if (gpus == 0) sub(/ Gres=gpu:[0-9]+/, ""); print; next }
        /^GresTypes=/ && gpus == 0 { next }
        { print }'
}

changed=0
install_conf() {  # install_conf TEMPLATE DEST MODE
    local tmp; tmp=$(mktemp)
    render "$1" >"$tmp"
    if ! cmp -s "$tmp" "$2"; then
        install -m "$3" "$tmp" "$2"; changed=1; log "wrote $2"
    fi
    rm -f "$tmp"
}
install_conf "$TPL/slurm.conf.in" /etc/slurm/slurm.conf 644
if (( GPUS > 0 )); then
    install_conf "$TPL/gres.conf.in" /etc/slurm/gres.conf 644
    # fake GPU device nodes: char devices with /dev/null's numbers (1:3)
    mkdir -p "$RUN/fake-gpus"
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $RUN/fake-gpus/gpu$i ]] || mknod "$RUN/fake-gpus/gpu$i" c 1 3
    done
else
    [[ -e /etc/slurm/gres.conf ]] && { rm -f /etc/slurm/gres.conf; changed=1; }
fi
[[ $ACCT == 1 ]] && install_conf "$TPL/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf 600

# config changed while our slurm daemons run -> restart them (state is kept)
if (( changed )); then
    restart=(slurmd slurmctld); [[ $ACCT == 1 ]] && restart+=(slurmdbd)
    for d in "${restart[@]}"; do
        if alive "$RUN/$d.pid" "$d"; then
            log "config changed: restarting $d"
            pid=$(<"$RUN/$d.pid"); kill "$pid"
            wait_for 30 bash -c "! kill -0 $pid" || die "$d (pid $pid) did not stop"
        fi
    done
fi

# ---------------------------------------------------------------- 3. munged
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; }
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 bash -c 'munge -n | unmunge' || die "munged did not start"
    mark munged /run/munge/munged.pid
    log "started munged (pid $(<"$MARK/munged.pid"))"
fi

# ---------------------------------------------------------------- 4. MariaDB + slurmdbd
if [[ $ACCT == 1 ]]; then
    if mariadb-admin ping >/dev/null 2>&1; then
        log "mariadb already running"
    else
        install -d -o mysql -g mysql -m 755 /run/mysqld
        [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        # mariadbd does not fork; setsid detaches it from this shell's session
        setsid /usr/sbin/mariadbd --user=mysql --innodb-buffer-pool-size=64M \
            </dev/null >>"$LOG/mariadb.log" 2>&1 &
        wait_for "$TIMEOUT" mariadb-admin ping || { tail "$LOG/mariadb.log"; die "mariadb did not start"; }
        mark mariadbd /run/mysqld/mysqld.pid
        log "started mariadbd (pid $(<"$MARK/mariadbd.pid"))"
    fi
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    start_slurm_daemon slurmdbd "$TIMEOUT" sacctmgr -n list cluster
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
start_slurm_daemon slurmctld "$TIMEOUT" scontrol ping
start_slurm_daemon slurmd 10 test -s "$RUN/slurmd.pid"

# ---------------------------------------------------------------- 6. wait for the node
node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1; }
end=$(( $(date +%s) + TIMEOUT ))
while :; do
    st=$(node_state)
    case "$st" in
        idle|mix|alloc) break ;;
        down*|drain*|drng*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    (( $(date +%s) < end )) || { tail "$LOG/slurmd.log"; die "node $HOST stuck in state '$st'"; }
    sleep 0.2
done
if [[ $ACCT == 1 ]]; then
    wait_for "$TIMEOUT" bash -c 'sacctmgr -n -P list cluster format=cluster | grep -qx localcluster && sacct -n -X -S now-1minutes' \
        || die "slurmctld did not register with slurmdbd"
fi
log "ready in $(elapsed) s: node $HOST $(node_state), CPUs $(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw"), mem ${MEM} MB, gpus $GPUS, accounting $([[ $ACCT == 1 ]] && echo slurmdbd || echo none)"
