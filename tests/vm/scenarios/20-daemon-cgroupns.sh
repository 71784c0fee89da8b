#!/bin/bash
# The private cgroup namespace option with a stand-in that does what the Dagger engine does
# on cgroup v2: it sees its group as the root (0::/), moves itself into /init, enables the
# controllers for its children and runs a "build container" in /buildkit/x. The build's
# memory hog must be OOM-killed under the engine group's memory.max. A crash and restart of
# such an engine must work too (the group it leaves behind has children and controllers on).
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

reset_unit
trap forget_daemon_state EXIT



cat >/usr/local/bin/fake-dagger-engine <<'EOF'
#!/bin/bash
# What the engine's entrypoint and buildkit do with the cgroup tree they see.
exec >>/run/fake-dagger.log 2>&1
echo "engine $$ sees: $(cat /proc/self/cgroup)"
echo "engine $$ mounts: $(grep ' /sys/fs/cgroup ' /proc/self/mounts | tail -1)"
echo $$ >/run/fake-dagger.pid
mkdir -p /sys/fs/cgroup/init
echo $$ >/sys/fs/cgroup/init/cgroup.procs
echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/buildkit
echo "+cpu +memory +pids" >/sys/fs/cgroup/buildkit/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/buildkit/x
trap 'echo "$$ TERM" >>/run/fake-dagger.term; kill $(jobs -p) 2>/dev/null; exit 0' TERM
# The "build container": joins /buildkit/x as the engine sees it, then allocates 400 MiB.
sh -c 'echo $$ >/sys/fs/cgroup/buildkit/x/cgroup.procs && echo "build $$ sees: $(cat /proc/self/cgroup)" &&
       exec stress-ng --vm 1 --vm-bytes 400M --vm-keep --oomable --timeout 30s' &
sleep 100000 &
wait
EOF
chmod +x /usr/local/bin/fake-dagger-engine

cat >/etc/ccgroupd/config.toml <<'EOF'
[cgroup]
name = "dagger-engine"

[limits]
memory = "200M"
memory_swap = 0
pids = 200

[engine]
command = ["/usr/local/bin/fake-dagger-engine"]
private_cgroup_namespace = true
restart = "always"
restart_initial_delay_s = 0.5
stop_grace_s = 10

[daemon]
log_format = "journal"
EOF

check "systemctl start ccgroupd succeeds" systemctl start ccgroupd
unit_cg=$(systemctl show ccgroupd -p ControlGroup --value)
group=/sys/fs/cgroup$unit_cg/dagger-engine
# (cgroupfs files report size 0: test -s cannot tell whether they hold anything.)
check "engine moved itself into <group>/init" wait_for 20 grep -qs . "$group/init/cgroup.procs"
check "the build's group landed at <group>/buildkit/x" wait_for 20 test -d "$group/buildkit/x"
check "no /buildkit was created at the host's root" test ! -e /sys/fs/cgroup/buildkit
check "no /init was created at the host's root" test ! -e /sys/fs/cgroup/init
check "the hog was OOM-killed under the engine's memory.max" \
    wait_for 60 bash -c "grep -qs '^oom_kill [1-9]' $group/memory.events"
echo "engine group memory.max=$(cat "$group/memory.max"); memory.events: $(tr '\n' ' ' <"$group/memory.events")"
echo "buildkit/x memory.events: $(tr '\n' ' ' <"$group/buildkit/x/memory.events")"
echo "buildkit/x memory.peak: $(cat "$group/buildkit/x/memory.peak" 2>/dev/null)"
cat /run/fake-dagger.log
check "engine saw its group as the root (0::/init after moving)" grep -q 'engine .* sees: 0::/$' /run/fake-dagger.log
check "build saw itself in /buildkit/x" grep -q 'build .* sees: 0::/buildkit/x$' /run/fake-dagger.log
journalctl -u ccgroupd --no-pager -o json | jq -r 'select(.CCGROUPD_EVENT=="oom_kill") | .MESSAGE' | head -2
check "the host's mount table is untouched (one cgroup2 mount)" test "$(grep -c ' /sys/fs/cgroup ' /proc/1/mounts)" -eq 1

echo "--- crash of a namespaced engine: the restart must get into the group again"
engine_pid=$(cat /run/fake-dagger.pid)
: >/run/fake-dagger.log
# An engine that dies of SIGKILL within 5 s of an OOM kill anywhere in its group is (by
# design) reported as OOM-killed (the monitor's OOM_ATTRIBUTION_WINDOW_S); past that, not.
sleep 6
kill -KILL "$engine_pid"
check "engine restarted" wait_for 30 bash -c "test -s /run/fake-dagger.pid && test \"\$(cat /run/fake-dagger.pid)\" != $engine_pid && grep -q sees /run/fake-dagger.log"
new_pid=$(cat /run/fake-dagger.pid)
crash_record=$(journalctl -u ccgroupd -o json --no-pager | jq -r 'select(.CCGROUPD_EVENT=="engine_exited") | .MESSAGE' | tail -1)
echo "$crash_record"
check "a kill by hand > 5 s after the build's OOM kill is not called an OOM kill" \
    bash -c "! grep -q OOM-killed <<<'$crash_record'"
check "restarted engine in <group>/init" wait_for 20 grep -qx "$new_pid" "$group/init/cgroup.procs"
journalctl -u ccgroupd --no-pager -o cat | grep -iE 'shim|cannot' | tail -3

echo "--- stop"
check "systemctl stop succeeds" systemctl stop ccgroupd
check "engine got SIGTERM" grep -q "^$new_pid TERM" /run/fake-dagger.term
check "no engine process left" bash -c "! kill -0 $new_pid 2>/dev/null"
check "engine group gone" test ! -d "$group"

finish
