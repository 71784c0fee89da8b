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

# start_fresh: start ccgroupd without persisted limit changes; exit the scenario if it fails.
start_fresh() {
    reset_unit
    rm -f /var/lib/ccgroupd/limits.json
    systemctl start ccgroupd
    if ! systemctl is-active -q ccgroupd; then
        echo "FAILED: ccgroupd did not start; nothing else can be shown"
        journalctl -b -u ccgroupd --no-pager -o cat | tail -n 40
        exit 1
    fi
    echo "ok: ccgroupd started"
}

# engine_cgroup: the engine group's path, as ccgroupctl status reports it.
engine_cgroup() {
    ccgroupctl status --json | "$CCGROUPD_PYTHON" -c \
        'import json, sys; print(json.load(sys.stdin)["cgroup"]["path"])'
}

# forget_daemon_state: stop the unit and remove what its StateDirectory= keeps, so
# that later scenarios (50-deb compares the file system before and after) find a
# host as the harness left it. Scenarios that start ccgroupd run it on EXIT.
forget_daemon_state() {
    systemctl stop ccgroupd 2>/dev/null
    rm -rf /var/lib/ccgroupd
}

# finish: the scenario's exit status, from the checks counted so far.
finish() {
    echo "failures: $failures"
    exit $((failures > 0))
}
