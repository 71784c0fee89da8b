#!/bin/bash
# vm-timeout-s: 480
# [engine] mode = "runc" with the stand-in engine (tests/vm/image/standin-engine.c), which
# does on cgroup v2 what the Dagger engine's entrypoint does: moves itself to /init of its
# cgroup namespace, enables every controller and runs builds in /buildkit/<id>. Must show:
# READY only once the engine's socket accepts; runc, the engine and its builds all under
# the engine group (no group and no subtree_control outside it written); a build's memory
# hog OOM-killed under the group's memory.max with ccgroupd's oom_kill naming the build's
# group; a CPU-bound build throttled by its cpu.max; `systemctl stop ccgroupd` delivers
# SIGTERM to the entrypoint and leaves no process and no container; a probe that never
# succeeds fails the start loudly (engine_not_ready).
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

unit_cg=/sys/fs/cgroup/system.slice/ccgroupd.service
group=$unit_cg/dagger-engine
config=/etc/ccgroupd/config.toml
saved_config=$(mktemp)
cp "$config" "$saved_config"
made_dirs=()
for dir in /run/dagger /var/lib/dagger; do
    [[ -e $dir ]] || made_dirs+=("$dir")
done
cleanup() {
    forget_daemon_state
    cp "$saved_config" "$config"
    rm -f "$saved_config"
    rm -rf "${made_dirs[@]}"
}
reset_unit
trap cleanup EXIT
mark_journal

write_config() {  # write_config READY_DELAY_S READY_TIMEOUT_S RESTART_BURST
    cat >"$config" <<EOF
[limits]
cpus = 0.5
memory = "200M"
memory_swap = 0
pids = 200

[engine]
mode = "runc"
rootfs = "$STANDIN_DIR/rootfs"
command = ["/usr/local/bin/standin-engine", "--ready-delay-s", "$1"]
ready_socket = "$STANDIN_SOCKET"
ready_timeout_s = $2
restart = "on-failure"
restart_initial_delay_s = 0.5
restart_burst = $3
stop_grace_s = 30

[monitor]
cpu_poll_interval_s = 1

[daemon]
log_format = "journal"
EOF
}

# Everything runc and the engine write must be inside the engine group: the host's other
# groups stay as they are, and / and /system.slice get no controller that systemd does not
# enable itself for a Delegate=yes unit (runc enables every controller it can in each
# ancestor of its group; docker's runc adds hugetlb, rdma and misc at the root).
outside_before=$(groups_outside "$unit_cg")
controls() { cat /sys/fs/cgroup/cgroup.subtree_control /sys/fs/cgroup/system.slice/cgroup.subtree_control | tr ' ' '\n' | sort -u; }
controls_before=$(controls)

echo "--- start (the stand-in listens 3 s after it starts)"
write_config 3 60 5
start_standin_engine

echo "--- where everything runs"
subtree_procs "$group"
procs=$(subtree_procs "$group")
check "runc runs in <group>/launcher" grep -q '^/launcher [0-9]* runc$' <<<"$procs"
check "the engine moved itself to <group>/container/init" \
    grep -q '^/container/init [0-9]* standin-engine$' <<<"$procs"
check "the engine's /buildkit is <group>/container/buildkit" test -d "$group/container/buildkit"
check "runc state: one container, ccgroupd-engine" \
    test "$(runc --root /run/ccgroupd/runc list -q)" = ccgroupd-engine

check_standin_builds "$group" container

# Every stand-in process on the host (engine and builds) is inside the engine group.
outside=$(for pid in $(pgrep -x standin-engine); do
    grep -q "^0::${group#/sys/fs/cgroup}/" "/proc/$pid/cgroup" || echo "$pid $(cat "/proc/$pid/cgroup")"
done)
check "every engine and build process is under the engine group" test -z "$outside"
echo "$outside"
check "no cgroup outside ccgroupd.service was created or removed" \
    test "$(groups_outside "$unit_cg")" = "$outside_before"
echo "subtree_control of /: $(cat /sys/fs/cgroup/cgroup.subtree_control); of /system.slice: $(cat /sys/fs/cgroup/system.slice/cgroup.subtree_control)"
added=$(comm -13 <(echo "$controls_before") <(controls) | grep -vxE 'cpu|cpuset|io|memory|pids')
check "no controller beyond systemd's own was enabled at / or /system.slice${added:+ (added: $added)}" \
    test -z "$added"

echo "--- stop"
stop_standin_engine
check "no runc left" test -z "$(pgrep -x runc)"
check "no container left in runc's state" test -z "$(runc --root /run/ccgroupd/runc list -q 2>/dev/null)"
check "the engine group is gone" test ! -e "$group"

echo "--- a readiness probe that never succeeds (one start allowed: the unit must fail)"
write_config 600 5 1
reset_unit
rm -f "$STANDIN_MARKER"
failed_started_s=$SECONDS
check "systemctl start ccgroupd fails" bash -c "! systemctl start ccgroupd"
echo "systemctl start gave up after $((SECONDS - failed_started_s)) s"
systemctl show ccgroupd -p Result -p ExecMainStatus | tr '\n' ' '
echo
event_records engine_not_ready | jq -c '{MESSAGE, CCGROUPD_PID, CCGROUPD_CGROUP, CCGROUPD_TIMEOUT_S}'
check "ccgroupd logged engine_not_ready at priority error" \
    test "$(event_records engine_not_ready | jq -r .PRIORITY | tail -1)" = 3
check "the never-ready engine got SIGTERM" grep -qx 'SIGTERM pid=1' "$STANDIN_MARKER"
check "no engine process left" wait_for 20 bash -c '! pgrep -x standin-engine >/dev/null'
check "the engine group is gone" wait_for 20 test ! -e "$group"

finish
