# Helpers sourced by the shell scenarios (not a scenario itself: not executable).
# shellcheck shell=bash

failures=0

# check WHAT COMMAND...: run COMMAND, print ok/FAILED, count failures; never aborts.
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "FAILED: $what"
        failures=$((failures + 1))
    fi
}

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Another scenario may have left the unit running, failed or at its start limit.
reset_unit() {
    systemctl stop ccgroupd 2>/dev/null
    systemctl reset-failed ccgroupd 2>/dev/null
    return 0
}

# finish: the scenario's exit status, from the checks counted so far.
finish() {
    echo "failures: $failures"
    exit $((failures > 0))
}
