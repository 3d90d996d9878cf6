#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for the project's tests (Debian/Ubuntu, no systemd needed).
#
#   tests/slurm/cluster.sh install   apt-get install slurm-wlm + munge (only as root, only when missing)
#   tests/slurm/cluster.sh up        start munged, slurmctld, slurmd; wait until the node is idle
#   tests/slurm/cluster.sh env       print the exports clients need (SLURM_CONF, PATH with the sacct shim)
#   tests/slurm/cluster.sh status    exit 0 iff the controller answers
#   tests/slurm/cluster.sh down      cancel all jobs, stop what `up` started (by pid file)
#
# CI: tests/slurm/cluster.sh install && tests/slurm/cluster.sh up && eval "$(tests/slurm/cluster.sh env)";
#     pytest ...; tests/slurm/cluster.sh down
#
# Design notes (what a bare single-node cluster needs; see docs/cluster.md):
# - SlurmUser=root and state/spool/log dirs under $DIR, so no ownership problems; the node and controller are
#   addressed as 127.0.0.1, so no DNS is needed.
# - /run/munge does not exist without systemd: create it and run munged as user munge.
# - DefMemPerCPU: without it a job without --mem takes the whole node's memory and jobs run one at a time.
# - EnforcePartLimits=ALL: impossible requests fail at sbatch time instead of pending forever.
# - cred_expire=10 + fast scheduler ticks: a requeued job restarts ~10 s later instead of ~2.5 min.
# - No accounting, so `sacct` always fails and submitit cannot see a job that died: a small shim answers
#   submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID` from `scontrol show job`.
# Knobs: SLURM_TEST_DIR (/tmp/repa-slurm), SLURM_TEST_CPUS (detected), SLURM_TEST_MEM_MB (detected),
#        SLURM_TEST_PARTITION (debug).
set -euo pipefail
export PATH="/usr/sbin:/sbin:$PATH"

DIR=${SLURM_TEST_DIR:-/tmp/repa-slurm}
CONF=$DIR/slurm.conf
PARTITION=${SLURM_TEST_PARTITION:-debug}
NODE=$(hostname -s)
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}

say() { echo "[cluster.sh] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || fail "must run as root (it starts system daemons)"; }
have_bins() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; }
# a pid from a pid file, if that process is alive, not a zombie, and runs the expected program
live_pid() {
    local file=$1 prog=$2 pid state
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [ "$state" != Z ] || return 1
    [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$prog" ] || return 1
    echo "$pid"
}
ctld_up() { SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q UP; }
munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

cmd_install() {
    if have_bins; then say "slurm and munge already installed"; return 0; fi
    need_root
    say "installing slurm-wlm and munge with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            slurm-wlm munge >/dev/null; }
    have_bins || fail "slurm-wlm/munge installed but binaries not found"
}

write_conf() {
    local cpus mem
    cpus=${SLURM_TEST_CPUS:-$(nproc)}
    mem=${SLURM_TEST_MEM_MB:-$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')}
    [ -n "$mem" ] || mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
    cat >"$CONF" <<EOF
# written by repa-study tests/slurm/cluster.sh
ClusterName=repatest
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${DIR}/run/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
MinJobAge=3600
SlurmdParameters=config_overrides
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket=${cpus} ThreadsPerCore=1 RealMemory=${mem} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( mem / cpus ))
EOF
}

write_sacct_shim() {
    mkdir -p "$DIR/bin"
    cat >"$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct for a cluster without accounting: answers `sacct -o JobID,State,NodeList --parsable2 -j ID...` (what
# submitit asks) from `scontrol show job -o`; anything else goes to the real sacct.
fields=JobID,State; ids=()
orig=("$@")
while [ $# -gt 0 ]; do
    case $1 in
        -o|--format) fields=$2; shift 2 ;;
        --format=*) fields=${1#*=}; shift ;;
        -j|--jobs) IFS=, read -ra more <<<"$2"; ids+=("${more[@]}"); shift 2 ;;
        --jobs=*) IFS=, read -ra more <<<"${1#*=}"; ids+=("${more[@]}"); shift ;;
        -P|--parsable2|-X|--allocations) shift ;;
        *) exec /usr/bin/sacct "${orig[@]}" ;;
    esac
done
echo "$fields" | tr ',' '|'
for id in "${ids[@]}"; do scontrol show job -o "${id%%.*}" 2>/dev/null; done | awk -v fields="$fields" '
function get(k,  m) { if (match($0, "(^| )" k "=[^ ]*")) { m = substr($0, RSTART, RLENGTH); sub(/^ /, "", m); return substr(m, length(k) + 2) } return "" }
/^JobId=/ {
    id = get("JobId"); a = get("ArrayJobId"); t = get("ArrayTaskId")
    if (a != "" && t != "") id = (t ~ /[-,%]/) ? a "_[" t "]" : a "_" t
    if (id in seen) next; seen[id] = 1
    n = split(fields, f, ","); line = ""
    for (i = 1; i <= n; i++) {
        k = tolower(f[i])
        v = (k == "jobid") ? id : (k == "state") ? get("JobState") : (k == "nodelist") ? get("NodeList") : ""
        if (k == "nodelist" && (v == "" || v == "(null)")) v = "None assigned"
        line = line (i > 1 ? "|" : "") v
    }
    print line
}'
EOF
    chmod 0755 "$DIR/bin/sacct"
}

start_munge() {
    if munge_up; then say "munged already answering: reusing it"; return 0; fi
    id munge >/dev/null 2>&1 || fail "no user 'munge' (run: $0 install)"
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- munged --force || fail "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge_up && break; sleep 0.1; done
    munge_up || fail "munged started but does not answer"
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
}

cmd_up() {
    need_root
    have_bins || fail "slurm is not installed (run: $0 install)"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
    if ! live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null && ! live_pid "$DIR/run/slurmd.pid" slurmd >/dev/null; then
        write_conf
    fi
    write_sacct_shim
    start_munge
    if ! live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
        slurmctld -f "$CONF" || fail "slurmctld did not start: $(tail -n 5 "$DIR/log/slurmctld.log" 2>/dev/null)"
        for _ in $(seq 100); do ctld_up && break; sleep 0.1; done
        ctld_up || fail "slurmctld not answering: $(tail -n 5 "$DIR/log/slurmctld.log" 2>/dev/null)"
    fi
    if ! live_pid "$DIR/run/slurmd.pid" slurmd >/dev/null; then
        slurmd -f "$CONF" -N "$NODE" || fail "slurmd did not start: $(tail -n 5 "$DIR/log/slurmd.log" 2>/dev/null)"
    fi
    local state="" resumed=0
    for _ in $(seq 150); do
        state=$(SLURM_CONF=$CONF sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 | tr -d '*~#')
        case $state in
            idle|mixed|allocated) break ;;
            down|drained|draining|drain)
                [ $resumed = 1 ] || SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                resumed=1 ;;
        esac
        sleep 0.2
    done
    case $state in idle|mixed|allocated) ;; *)
        fail "node $NODE not usable (state '${state:-none}'): $(tail -n 5 "$DIR/log/slurmd.log" 2>/dev/null)" ;;
    esac
    say "cluster up: node $NODE is $state (config $CONF)"
}

cmd_down() {
    need_root
    if ctld_up; then
        SLURM_CONF=$CONF scancel -p "$PARTITION" 2>/dev/null || true
        for _ in $(seq 100); do [ -z "$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    local prog pid
    for prog in slurmd slurmctld munged; do
        pid=$(live_pid "$DIR/run/$prog.pid" "$prog") || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do live_pid "$DIR/run/$prog.pid" "$prog" >/dev/null || break; sleep 0.1; done
        live_pid "$DIR/run/$prog.pid" "$prog" >/dev/null && kill -KILL "$pid" 2>/dev/null
        rm -f "$DIR/run/$prog.pid"
    done
    say "cluster down"
}

case ${1:-} in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) ctld_up ;;
    env) echo "export SLURM_CONF=$CONF"; echo "export PATH=\"$DIR/bin:\$PATH\"" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
