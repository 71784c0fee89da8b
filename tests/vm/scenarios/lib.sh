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

# --- the stand-in engine (tests/vm/image/standin-engine.c), for the 70-engine-* scenarios
# Its rootfs (for runc) and rootfs.tar (for docker import) are in STANDIN_DIR. It appends
# "SIGTERM pid=N" to STANDIN_MARKER (in the bind-mounted /run/dagger) when SIGTERM reaches it.
# shellcheck disable=SC2034  # used by the scenarios that source this file
STANDIN_DIR=/usr/local/lib/ccgroupd-standin STANDIN_MARKER=/run/dagger/standin-terminated
STANDIN_SOCKET=/run/dagger/engine.sock

# standin LINE: send one command to the stand-in's socket and print its one-line reply.
standin() {
    python3 -c '
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(20)
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode() + b"\n")
    print(s.makefile().readline().strip())' "$STANDIN_SOCKET" "$1"
}

# mark_journal: event_records sees only records logged after this (the scenarios of one
# boot share the journal).
mark_journal() {
    journal_cursor=$(journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
}

# event_records NAME: ccgroupd's journal records of event NAME, one JSON object a line.
event_records() {
    journalctl -u ccgroupd --no-pager -o json ${journal_cursor:+--after-cursor="$journal_cursor"} |
        jq -c --arg e "$1" 'select(.CCGROUPD_EVENT == $e)'
}

# oom_kill_names GROUP: an oom_kill record names GROUP (relative to the engine group) in
# CCGROUPD_OOM_GROUPS, the groups whose own processes were killed.
oom_kill_names() {
    event_records oom_kill | jq -r '(.CCGROUPD_OOM_GROUPS // "{}") | fromjson | keys[]' |
        grep -qxF "$1"
}

# cpu_throttled_logged: ccgroupd logged cpu_throttled.
cpu_throttled_logged() {
    [[ -n $(event_records cpu_throttled) ]]
}

# subtree_procs DIR: "<group below DIR>/ <pid> <comm>" for every process in DIR's subtree.
subtree_procs() {
    local procs pid
    find "$1" -name cgroup.procs | sort | while read -r procs; do
        while read -r pid; do
            echo "${procs#"$1"} $pid $(cat "/proc/$pid/comm" 2>/dev/null)"
        done <"$procs"
    done | sed 's|/cgroup.procs | |'
}

# groups_outside DIR: every cgroup of the host that is not DIR or below it.
groups_outside() {
    find /sys/fs/cgroup -type d | grep -v -e "^$1\$" -e "^$1/" | sort
}

# check_standin_builds GROUP CONTAINER: the must-show facts of a stand-in engine whose
# container group is GROUP/CONTAINER: a build's memory hog is OOM-killed under GROUP's
# memory.max and ccgroupd's oom_kill record names the build's group; a CPU-bound build is
# throttled by GROUP's cpu.max and ccgroupd reports cpu_throttled.
check_standin_builds() {
    local group=$1 container=$2 reply n1 n2
    reply=$(standin "build mem 400 a")
    echo "build mem 400 a -> $reply"
    check "the memory build runs in $container/buildkit/a" \
        grep -q "cgroup /buildkit/a\$" <<<"$reply"
    check "the memory hog was OOM-killed under the engine group's memory.max" \
        wait_for 60 grep -qs '^oom_kill [1-9]' "$group/memory.events"
    echo "engine group memory.max $(cat "$group/memory.max"); memory.events: $(tr '\n' ' ' <"$group/memory.events")"
    echo "$container/buildkit/a memory.events.local: $(tr '\n' ' ' <"$group/$container/buildkit/a/memory.events.local")"
    check "the kill was in $container/buildkit/a itself" \
        grep -qs '^oom_kill [1-9]' "$group/$container/buildkit/a/memory.events.local"
    check "ccgroupd logged oom_kill naming $container/buildkit/a" \
        wait_for 30 oom_kill_names "$container/buildkit/a"
    event_records oom_kill | jq -c '{MESSAGE, CCGROUPD_OOM_GROUPS}'

    reply=$(standin "build cpu 0 b")
    echo "build cpu 0 b -> $reply"
    check "the CPU build runs in $container/buildkit/b" \
        grep -qs . "$group/$container/buildkit/b/cgroup.procs"
    n1=$(awk '$1 == "nr_throttled" {print $2}' "$group/cpu.stat")
    sleep 4
    n2=$(awk '$1 == "nr_throttled" {print $2}' "$group/cpu.stat")
    echo "engine group cpu.max $(cat "$group/cpu.max"); nr_throttled $n1 -> $n2 in 4 s"
    check "the CPU build is throttled by the engine group's cpu.max" test "$n2" -gt "$n1"
    check "ccgroupd logged cpu_throttled for the engine group" wait_for 30 cpu_throttled_logged
    event_records cpu_throttled | jq -r '.MESSAGE' | head -1
}

# start_standin_engine: start ccgroupd on the stand-in engine (configured to listen 3 s
# after it starts) and check that READY=1 waited for its socket.
start_standin_engine() {
    rm -f "$STANDIN_MARKER"
    local started_s=$SECONDS ready_after_s
    check "systemctl start ccgroupd succeeds" systemctl start ccgroupd
    echo "systemctl start took $((SECONDS - started_s)) s"
    # Type=notify: systemctl start returns after READY=1, which must wait for the socket.
    check "the engine's socket answers as soon as systemctl start returns" \
        test "$(standin ping)" = pong
    event_records engine_ready | jq -r '.MESSAGE'
    ready_after_s=$(event_records engine_ready | jq -r '.CCGROUPD_READY_AFTER_S' | tail -1)
    check "engine_ready came after the stand-in's 3 s delay ($ready_after_s s)" \
        test "${ready_after_s%.*}" -ge 3
}

# stop_standin_engine: systemctl stop ccgroupd, and check that the stop was graceful:
# SIGTERM reached the stand-in's entrypoint, the launcher exited 0, no process is left.
stop_standin_engine() {
    local stop_started_s=$SECONDS
    check "systemctl stop ccgroupd succeeds" systemctl stop ccgroupd
    echo "systemctl stop took $((SECONDS - stop_started_s)) s (grace 30 s)"
    check "SIGTERM reached the engine's entrypoint (pid 1 in its namespace)" \
        grep -qx 'SIGTERM pid=1' "$STANDIN_MARKER"
    event_records engine_exited | jq -r '.MESSAGE' | tail -1
    check "the launcher exited 0 after SIGTERM (graceful, not cgroup.kill)" \
        test "$(event_records engine_exited | tail -1 | jq -r .CCGROUPD_EXIT_CODE)" = 0
    check "no engine or build process left" test -z "$(pgrep -x standin-engine)"
}

# Scenarios that run docker change the host: the config, docker's daemon.json, the
# directories they make, and (docker's runc) the subtree_control of / and /system.slice.
# docker_host_save DIR... records them (and which DIRs did not exist);
# docker_host_restore, from the scenario's cleanup, puts them back.
DOCKER_DAEMON_JSON=/etc/docker/daemon.json
subtree_controllers() { cat "/sys/fs/cgroup$1/cgroup.subtree_control"; }
docker_host_save() {
    docker_saved=$(mktemp -d)
    cp /etc/ccgroupd/config.toml "$docker_saved/config.toml"
    [[ ! -e $DOCKER_DAEMON_JSON ]] || cp "$DOCKER_DAEMON_JSON" "$docker_saved/daemon.json"
    docker_made_dirs=()
    local dir
    for dir in "$@"; do
        [[ -e $dir ]] || docker_made_dirs+=("$dir")
    done
    root_controls_before=$(subtree_controllers /)
    slice_controls_before=$(subtree_controllers /system.slice)
}
docker_host_restore() {
    cp "$docker_saved/config.toml" /etc/ccgroupd/config.toml
    if [[ -e $docker_saved/daemon.json ]]; then
        cp "$docker_saved/daemon.json" "$DOCKER_DAEMON_JSON"
    else
        rm -f "$DOCKER_DAEMON_JSON"
    fi
    rm -rf "$docker_saved" "${docker_made_dirs[@]}"
    # docker's runc enabled every controller the kernel has (hugetlb, rdma, misc as well)
    # in the subtree_control of each ancestor of the container, / and /system.slice
    # included, and systemd leaves controllers it does not manage on. Switch off what was
    # not on before, children first (a parent cannot drop what a child still uses).
    local controller
    for controller in $(subtree_controllers /); do
        grep -qw "$controller" <<<"$root_controls_before" && continue
        grep -qw "$controller" <<<"$slice_controls_before" ||
            echo "-$controller" >/sys/fs/cgroup/system.slice/cgroup.subtree_control
        echo "-$controller" >/sys/fs/cgroup/cgroup.subtree_control
    done
}
