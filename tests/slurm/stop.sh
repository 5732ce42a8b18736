#!/usr/bin/env bash
# stop.sh - stop the daemons that start.sh started, and only those:
# it reads /run/slurm-local/started/<name>.pid and kills that PID if the process
# still has the expected name. Never kills by name pattern.
#   --cancel-jobs  scancel all jobs first (else running job steps outlive slurmd)
#   --wipe         also delete SLURM state/logs (job ids restart at 1) - not the MariaDB data
set -uo pipefail
RUN=/run/slurm-local
MARK="$RUN/started"
cancel=0; wipe=0
for a in "$@"; do
    case "$a" in
        --cancel-jobs) cancel=1 ;;
        --wipe) wipe=1 ;;
        *) echo "usage: $0 [--cancel-jobs] [--wipe]" >&2; exit 2 ;;
    esac
done
log() { printf '[slurm-local %s] %s\n' "$(date +%T)" "$*"; }

if (( cancel )) && [[ -s $MARK/slurmctld.pid ]]; then
    scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
fi

# order: compute node, controller, accounting, database, auth
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f="$MARK/$name.pid"
    [[ -s $f ]] || continue
    pid=$(<"$f")
    if [[ -r /proc/$pid/comm && "$(</proc/$pid/comm)" == "$name" ]]; then
        kill -TERM "$pid"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
            kill -KILL "$pid"
        fi
        log "stopped $name (pid $pid)"
    else
        log "$name (pid $pid) not running any more"
    fi
    rm -f "$f"
done

if (( wipe )); then
    rm -rf /var/spool/slurm-local /var/log/slurm-local "$RUN/fake-gpus"
    log "wiped SLURM state and logs"
fi
