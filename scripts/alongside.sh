#!/usr/bin/env bash
# alongside.sh LOG BACKGROUND... -- FOREGROUND...
#
# Runs BACKGROUND, its output into LOG, while FOREGROUND runs with its output here; then prints LOG. Fails
# with FOREGROUND's status if that failed, else with BACKGROUND's. `make test` runs the PostgreSQL pass
# beside the serial pass, whose tests mostly wait on the clock: the two took their sum of time one after
# the other. BACKGROUND can't hold a `--` of its own (the first one ends it).
#
# Each runs in a process group of its own. A SIGINT or SIGTERM to this script (a terminal's Ctrl-C reaches
# it, not them) is sent on to both groups as a SIGTERM, once: a command a script starts in the background
# ignores SIGINT, and a pytest session ends on either as on Ctrl-C. It waits for both, so nothing of their
# groups outlives it, and exits 128 + the signal's number. Both read no input (/dev/null): run
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
set -m  # each job its own process group, so a signal reaches all of it, and SIGINT is not ignored in it
"${background[@]}" > "$log" 2>&1 < /dev/null &
back=$!
# A job too, so that a signal is handled at once: bash runs a trap only once a command in the foreground has
# ended, and `wait` returns as soon as one comes.
"$@" < /dev/null &
fore=$!
set +m

stopped=0
stop() {
    [[ $stopped -ne 0 ]] && return  # once: a second Ctrl-C must not cut the commands' own cleanup short
    stopped=$1
    kill -TERM -- "-$fore" "-$back" 2> /dev/null
}
trap 'stop 130' INT
trap 'stop 143' TERM

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
if [[ $stopped -ne 0 ]]; then
    echo "alongside.sh: stopped by a signal" >&2
    exit "$stopped"
fi
if [[ $fore_status -ne 0 ]]; then
    exit "$fore_status"
fi
if [[ $back_status -ne 0 ]]; then
    echo "alongside.sh: the background command failed (status $back_status): ${background[*]}" >&2
fi
exit "$back_status"
