#!/usr/bin/env bash
# alongside.sh LOG BACKGROUND... -- FOREGROUND...
#
# Runs BACKGROUND, its output into LOG, while FOREGROUND runs with its output here; then prints LOG. Fails
# with FOREGROUND's status if that failed, else with BACKGROUND's. `make test` runs the parallel pass
# behind the serial pass, whose tests mostly wait on the clock: the two took their sum of time one after
# the other. BACKGROUND can't hold a `--` of its own (the first one ends it).
#
# Both stay in this script's process group, so what a terminal sends it (Ctrl-C, Ctrl-Z, a hangup) reaches
# them as it reaches make's own commands; they take SIGINT as if in the foreground (a script's jobs would
# ignore it). A SIGTERM to this script alone is sent on to both: each command is to be one process that ends
# its own children on it, as a pytest session does (`exec` in a shell command). It waits for both either
# way, and exits 128 + the signal's number if they were stopped. Both read no input (/dev/null): run
# `pytest -m serial` by itself to use a debugger in a serial test.
set -uo pipefail

usage() { echo "usage: alongside.sh LOG BACKGROUND... -- FOREGROUND..." >&2; exit 2; }
[[ $# -ge 1 && -n $1 ]] || usage
log=$1
shift
background=()
while [[ $# -gt 0 && $1 != -- ]]; do
    background+=("$1")
    shift
done
[[ ${#background[@]} -gt 0 && $# -gt 1 ]] || usage
shift

mkdir -p "$(dirname "$log")" && : > "$log" || { echo "alongside.sh: can't write $log" >&2; exit 2; }
env --default-signal=INT "${background[@]}" > "$log" 2>&1 < /dev/null &
back=$!
# A job too, so that a signal is handled at once: bash runs a trap only once a command in the foreground has
# ended, and `wait` returns as soon as one comes.
env --default-signal=INT "$@" < /dev/null &
fore=$!

signal=0
trap 'signal=130' INT  # from a terminal, it reached both as well
trap 'signal=129' HUP  # the terminal closed: it reached both as well, and each ends itself; wait for them
trap 'signal=143; kill -TERM "$fore" "$back" 2> /dev/null' TERM

# `wait -n -p` (bash 5.1) names the job that ended; a trapped signal makes it return naming none, and it waits
# again. (A plain `wait PID` returns early for a trap too, and after it the same status again for a job that
# ended: it can't tell the two apart. Nor can `kill -0`, once a pid is reused.)
declare -A status_of=()
while [[ ${#status_of[@]} -lt 2 ]]; do
    running=()
    for pid in "$fore" "$back"; do [[ -n ${status_of[$pid]+set} ]] || running+=("$pid"); done
    wait -n -p ended "${running[@]}" 2> /dev/null
    status=$?
    if [[ -n ${ended:-} ]]; then
        status_of[$ended]=$status
    elif [[ $status -eq 127 ]]; then  # each ended already, its status taken by bash: a plain `wait` gives it
        for pid in "${running[@]}"; do
            wait "$pid"
            status_of[$pid]=$?
        done
    fi
done
fore_status=${status_of[$fore]}
back_status=${status_of[$back]}
trap - INT TERM HUP

echo
echo "--- ${background[*]} (beside ${*}; its output, from $log) ---"
cat "$log"
if [[ $signal -ne 0 && ( $fore_status -ne 0 || $back_status -ne 0 ) ]]; then  # a signal that stopped nothing is no failure
    echo "alongside.sh: stopped by a signal" >&2
    exit "$signal"
fi
if [[ $fore_status -ne 0 ]]; then
    exit "$fore_status"
fi
if [[ $back_status -ne 0 ]]; then
    echo "alongside.sh: the background command failed (status $back_status): ${background[*]}" >&2
fi
exit "$back_status"
