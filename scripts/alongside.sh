#!/usr/bin/env bash
# alongside.sh LOG BACKGROUND... -- FOREGROUND...
#
# Runs BACKGROUND, its output into LOG, while FOREGROUND runs with its output here; then prints LOG. Fails
# with FOREGROUND's status if that failed, else with BACKGROUND's. `make test` runs the PostgreSQL pass
# beside the serial pass, whose tests mostly wait on the clock: the two took their sum of time one after
# the other.
#
# Both run as jobs of this script, with SIGINT handled as in the foreground (a script's jobs would ignore it):
# a Ctrl-C reaches both from the terminal, as it reaches make's own commands. A SIGTERM to this script is sent
# on to both (a pytest session ends cleanly on either). It waits for both either way: neither outlives it.
set -uo pipefail

usage() { echo "usage: alongside.sh LOG BACKGROUND... -- FOREGROUND..." >&2; exit 2; }
[[ $# -ge 1 ]] || usage
log=$1
shift
background=()
while [[ $# -gt 0 && $1 != -- ]]; do
    background+=("$1")
    shift
done
[[ ${#background[@]} -gt 0 && $# -gt 1 ]] || usage
shift

mkdir -p "$(dirname "$log")"
env --default-signal=INT "${background[@]}" > "$log" 2>&1 &
back=$!
# A job too, so that a signal is handled at once: bash runs a trap only once a command in the foreground has
# ended, and `wait` returns as soon as one comes.
env --default-signal=INT "$@" &
fore=$!

stopped=""
trap 'stopped=INT' INT  # the terminal sent it to both as well
trap 'stopped=TERM; kill -TERM "$fore" "$back" 2> /dev/null' TERM

# `wait PID` returns early (above 128) when a trapped signal comes: wait again until the process has ended.
finish() {
    local pid=$1 status
    while true; do
        wait "$pid"
        status=$?
        kill -0 "$pid" 2> /dev/null || return "$status"
    done
}
finish "$fore"
fore_status=$?
finish "$back"
back_status=$?
trap - INT TERM

echo
echo "--- ${background[*]} (beside ${*}; its output, from $log) ---"
cat "$log"
if [[ -n $stopped ]]; then
    echo "alongside.sh: stopped by SIG$stopped" >&2
    exit 130
fi
if [[ $fore_status -ne 0 ]]; then
    exit "$fore_status"
fi
if [[ $back_status -ne 0 ]]; then
    echo "alongside.sh: the background command failed (status $back_status): ${background[*]}" >&2
fi
exit "$back_status"
