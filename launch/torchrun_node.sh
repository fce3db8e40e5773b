#!/usr/bin/env bash
# One node's torchrun, for the SLURM scripts beside this file: its ranks, their logs, and a stop that gives
# each rank exactly one SIGTERM, so that it finishes and writes its batch in flight before it leaves.
#   torchrun_node.sh --nproc N --log-dir DIR [--nnodes N --rdzv HOST:PORT] CONFIG [ddp_eval arguments...]
# Without --rdzv: torchrun --standalone. SIGTERM to this script: stop the ranks (later ones add nothing).
# STOP_TIMEOUT (s, default 100): how long the ranks may take; after it torchrun ends them. PYTHON: interpreter.
# Exit status: torchrun's (0: the run completed; non-zero: stopped or failed).
set -euo pipefail

nproc="" log_dir="" nnodes=1 rdzv=""
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --nproc) nproc=$2 ;;
        --log-dir) log_dir=$2 ;;
        --nnodes) nnodes=$2 ;;
        --rdzv) rdzv=$2 ;;
        *) echo "torchrun_node.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
config=${1:?usage: torchrun_node.sh --nproc N --log-dir DIR [--nnodes N --rdzv HOST:PORT] CONFIG [args...]}
shift
python=${PYTHON:-python}
stop_timeout=${STOP_TIMEOUT:-100}
node=${SLURM_NODEID:-0}
say() { echo "ddp_eval[${SLURM_JOB_ID:-local} node $node]: $*" >&2; }

if [[ -n $rdzv ]]; then
    log_dir=$log_dir/node$node
    where=(--nnodes="$nnodes" --rdzv-backend=c10d --rdzv-endpoint="$rdzv" --rdzv-id="${SLURM_JOB_ID:-local}")
else
    where=(--standalone)
fi
mkdir -p "$log_dir"
cpus=${SLURM_CPUS_ON_NODE:-$(nproc)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cpus / nproc > 0 ? cpus / nproc : 1))}
say "$(hostname): $nproc ranks, $OMP_NUM_THREADS CPU threads each; their logs in $log_dir/"

term="" stopped=""
trap 'term=1' TERM  # acted on below, once torchrun is running
# A stand-in for the ranks (a child in a session of its own, as torchrun starts them). If a TERM also
# ended it, SLURM signalled every process (proctrack/linuxproc does): the ranks have their TERM already.
setsid sleep infinity &
canary=$!
trap 'kill "$canary" 2>/dev/null || true' EXIT
# torchrun ignores TERM (inherited SIG_IGN, and SIGTERM left out of --signals-to-handle): forwarding a
# TERM that also reached the ranks would be their second, which stops a rank at once and loses its batch.
(trap '' TERM; exec "$python" -m torch.distributed.run "${where[@]}" --nproc_per_node="$nproc" \
    --signals-to-handle=SIGINT,SIGHUP,SIGQUIT --shutdown-timeout="$stop_timeout" \
    --log-dir "$log_dir" --redirects 3 --tee 3 \
    -m ddp_eval --config "$config" "$@") &
torchrun=$!

state_and_parent() {  # "STATE PPID" from /proc/PID/stat (after "pid (comm) "); fails once PID is gone
    local line fields
    read -r line 2>/dev/null < "/proc/$1/stat" || return 1
    read -ra fields <<< "${line##*) }"
    echo "${fields[0]} ${fields[1]}"
}
running() {  # not yet a zombie whose threads have all ended (a leader shows Z while its threads finish)
    local state threads
    state=$(state_and_parent "$1") || return 1
    threads=("/proc/$1/task/"*)
    [[ ${state%% *} != Z || ${#threads[@]} -gt 1 ]]
}
children_of() {  # read from /proc (procps' pgrep is not on every node), without a subshell per process
    local stat line fields
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null < "$stat" || continue
        read -ra fields <<< "${line##*) }"
        if [[ ${fields[1]} == "$1" ]]; then stat=${stat#/proc/}; echo "${stat%/stat}"; fi
    done
}

# torchrun stays frozen while the ranks finish: seeing the first one leave (exit 143) it would TERM the
# others a second time, and in a multi-node job the loss of another node's agent makes it do the same.
# Thawed, it finds them gone and ends.
stop_ranks() {
    local ranks pid waited=0
    while mapfile -t ranks < <(children_of "$torchrun"); ((${#ranks[@]} < nproc)) && running "$torchrun"; do
        if ((waited >= stop_timeout * 10)); then  # never got past the rendezvous: nothing is in flight
            say "only ${#ranks[@]} of $nproc ranks started within STOP_TIMEOUT=${stop_timeout}s: ending torchrun"
            kill -KILL "$torchrun" "${ranks[@]}" 2>/dev/null || true
            return 0
        fi
        sleep 0.1  # torchrun is still starting them
        waited=$((waited + 1))
    done
    kill -STOP "$torchrun" 2>/dev/null || return 0
    sleep 1  # SLURM signals the processes of a job one after another
    if ! running "$canary"; then
        say "SLURM's TERM reached every process of the job: the ranks have it"
    else
        say "sending SIGTERM to the ${#ranks[@]} ranks: each finishes its batch in flight, then stops"
        kill -TERM "${ranks[@]}" 2>/dev/null || true
    fi
    for pid in "${ranks[@]}"; do
        while running "$pid" && ((waited < stop_timeout * 10)); do sleep 0.1; waited=$((waited + 1)); done
    done
    if ((waited >= stop_timeout * 10)); then say "ranks still running after STOP_TIMEOUT=${stop_timeout}s"; fi
    kill -CONT "$torchrun" 2>/dev/null || true
}

while true; do
    status=0
    wait "$torchrun" || status=$?
    [[ -n $term ]] || break  # torchrun ended
    term=""
    if [[ -z $stopped ]]; then
        stopped=1
        stop_ranks
    fi
done
exit "$status"
