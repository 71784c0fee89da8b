#!/bin/bash
# ccgroupd under real systemd: start (READY, group, limits, engine inside), reload (good and
# broken config), drift, crash -> restart with backoff, stop (SIGTERM first, group empty),
# and an engine that keeps failing -> the unit ends up failed.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

reset_unit
trap 'forget_daemon_state; rm -rf /run/planted /run/planted-ran' EXIT

journal_events() { journalctl -u ccgroupd --no-pager -o json "$@" | jq -r 'select(.CCGROUPD_EVENT) | .CCGROUPD_EVENT'; }
count_event() { journalctl -u ccgroupd --no-pager -o json | jq -r 'select(.CCGROUPD_EVENT == "'"$1"'") | .CCGROUPD_EVENT' | wc -l; }

# A stand-in engine: records its pid, starts a child, and on SIGTERM leaves a marker.
cat >/usr/local/bin/fake-engine <<'EOF'
#!/bin/bash
echo $$ >/run/fake-engine.pid
trap 'echo "$$ TERM" >>/run/fake-engine.term; sleep 0.5; exit 0' TERM
sleep 100000 &
echo $! >/run/fake-engine.child
wait
EOF
chmod +x /usr/local/bin/fake-engine

write_config() {  # write_config MEMORY [ENGINE_COMMAND]
    cat >/etc/ccgroupd/config.toml <<EOF
[cgroup]
name = "dagger-engine"

[limits]
cpus = 0.5
memory = "$1"
pids = 64

[engine]
command = ["${2:-/usr/local/bin/fake-engine}"]
# The engine's environment is the exec shim's too: a planted package on this path must
# not run (as root) in place of ccgroupd's.
environment = { PYTHONPATH = "/run/planted" }
restart_initial_delay_s = 0.5
restart_max_delay_s = 2
restart_burst = 3
restart_window_s = 120
stop_grace_s = 10

[monitor]
drift_check_interval_s = 2

[daemon]
log_format = "journal"
EOF
}

mkdir -p /run/planted/ccgroupd
echo "open('/run/planted-ran', 'w').close()" >/run/planted/ccgroupd/__init__.py
rm -f /run/planted-ran
write_config 256M
start_cursor=$(journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
started_at=$SECONDS
check "systemctl start ccgroupd succeeds" systemctl start ccgroupd
echo "start took $((SECONDS - started_at)) s (READY=1 gates systemctl start for Type=notify)"
check "unit is active" test "$(systemctl is-active ccgroupd)" = active
systemctl show ccgroupd -p ActiveState -p SubState -p StatusText -p ControlGroup -p MainPID -p NotifyAccess
unit_cg=$(systemctl show ccgroupd -p ControlGroup --value)
group=/sys/fs/cgroup$unit_cg/dagger-engine
echo "engine group: $group"
check "StatusText names the limits and a running engine" \
    grep -q 'memory=256 MiB.*engine running' <<<"$(systemctl show ccgroupd -p StatusText --value)"
check "unit group carries trusted.delegate" \
    python3 -c "import os,sys; sys.exit(os.getxattr('/sys/fs/cgroup$unit_cg', 'trusted.delegate') != b'1')"
check "engine group exists" test -d "$group"
check "the shim ignored the planted package on the engine's PYTHONPATH" test ! -e /run/planted-ran
check "the engine may nest groups 32 levels deep, no more (cgroup.max.depth $(cat "$group/cgroup.max.depth"))" \
    test "$(cat "$group/cgroup.max.depth")" = 32
echo "cpu.max=$(cat "$group/cpu.max") memory.max=$(cat "$group/memory.max") pids.max=$(cat "$group/pids.max")"
check "cpu.max is 50000 100000" test "$(cat "$group/cpu.max")" = "50000 100000"
check "memory.max is 256 MiB" test "$(cat "$group/memory.max")" = 268435456
check "pids.max is 64" test "$(cat "$group/pids.max")" = 64
main_pid=$(systemctl show ccgroupd -p MainPID --value)
echo "daemon pid $main_pid in $(cut -d: -f3 /proc/$main_pid/cgroup)"
check "daemon moved itself into the supervisor leaf" \
    test "$(cut -d: -f3 "/proc/$main_pid/cgroup")" = "$unit_cg/supervisor"
echo "unit subtree_control: $(cat "/sys/fs/cgroup$unit_cg/cgroup.subtree_control")"
wait_for 20 test -s /run/fake-engine.child
engine_pid=$(cat /run/fake-engine.pid)
child_pid=$(cat /run/fake-engine.child)
echo "engine pid $engine_pid child $child_pid; group procs: $(tr '\n' ' ' <"$group/cgroup.procs")"
check "engine pid is in the group" grep -qx "$engine_pid" "$group/cgroup.procs"
check "engine's child is in the group" grep -qx "$child_pid" "$group/cgroup.procs"
check "nothing but the engine's processes in the group" test "$(wc -l <"$group/cgroup.procs")" -eq 2
check "engine's parent is the daemon (started through the exec shim, no extra process)" \
    test "$(ps -o ppid= -p "$engine_pid" | tr -d ' ')" = "$main_pid"
check "engine has no NOTIFY_SOCKET" bash -c "! tr '\0' '\n' </proc/$engine_pid/environ | grep -q ^NOTIFY_SOCKET="
for event in limits_applied engine_started daemon_started; do
    check "journal of this start has $event" bash -c "journalctl -u ccgroupd --after-cursor='$start_cursor' -o json --no-pager | jq -r .CCGROUPD_EVENT | grep -qx $event"
done
journalctl -u ccgroupd --after-cursor="$start_cursor" --no-pager -o cat | head -8

echo "--- reload with memory = 128M"
write_config 128M
check "systemctl reload succeeds" systemctl reload ccgroupd
check "memory.max is now 128 MiB" wait_for 10 grep -qx 134217728 "$group/memory.max"
check "engine pid unchanged after reload" test "$(cat /run/fake-engine.pid)" = "$engine_pid"
check "unit still active after reload" test "$(systemctl is-active ccgroupd)" = active

echo "--- reload with a broken config"
cat >>/etc/ccgroupd/config.toml <<'EOF'
[limits2]
memory = "banana"
EOF
sed -i 's/^memory = "128M"/memory = "banana"/' /etc/ccgroupd/config.toml
check "systemctl reload returns (the daemon keeps running)" systemctl reload ccgroupd
check "config_reload_failed logged" wait_for 10 bash -c "journalctl -u ccgroupd -o json --no-pager | jq -r .CCGROUPD_EVENT | grep -qx config_reload_failed"
journalctl -u ccgroupd --no-pager -o cat | grep -i 'reload failed' | tail -1
check "memory.max still 128 MiB" test "$(cat "$group/memory.max")" = 134217728
check "engine pid unchanged" test "$(cat /run/fake-engine.pid)" = "$engine_pid"
check "unit still active" test "$(systemctl is-active ccgroupd)" = active
write_config 128M

echo "--- drift: memory.max rewritten behind the daemon's back"
echo max >"$group/memory.max"
check "memory.max restored within the drift interval" wait_for 15 grep -qx 134217728 "$group/memory.max"
journalctl -u ccgroupd --no-pager -o json | jq -r 'select(.CCGROUPD_EVENT=="limits_drifted") | "\(.MESSAGE) old=\(.CCGROUPD_OLD) new=\(.CCGROUPD_NEW)"' | tail -1
check "limits_drifted logged" test "$(count_event limits_drifted)" -ge 1

echo "--- engine crash: SIGKILL to the engine"
rm -f /run/fake-engine.child
kill -KILL "$engine_pid"
check "engine restarted with a new pid" wait_for 20 bash -c "test -s /run/fake-engine.child && test \"\$(cat /run/fake-engine.pid)\" != $engine_pid"
new_engine_pid=$(cat /run/fake-engine.pid)
echo "new engine pid $new_engine_pid"
check "old child was killed with the group (not shared with the new engine)" bash -c "! kill -0 $child_pid 2>/dev/null"
check "new engine in the group" grep -qx "$new_engine_pid" "$group/cgroup.procs"
journalctl -u ccgroupd --no-pager -o json | jq -r 'select(.CCGROUPD_EVENT=="engine_exited" or .CCGROUPD_EVENT=="engine_restarting") | "\(.CCGROUPD_EVENT): \(.MESSAGE)"' | tail -2
check "engine_restarting logged" test "$(count_event engine_restarting)" -ge 1
systemctl show ccgroupd -p StatusText

echo "--- systemctl stop"
rm -f /run/fake-engine.term
stop_started=$SECONDS
check "systemctl stop succeeds" systemctl stop ccgroupd
echo "stop took $((SECONDS - stop_started)) s"
check "engine got SIGTERM (marker written by its trap)" grep -q "^$new_engine_pid TERM" /run/fake-engine.term
check "engine group is gone or empty" bash -c "! test -d $group || test ! -s $group/cgroup.procs"
check "no engine process left" bash -c "! kill -0 $new_engine_pid 2>/dev/null"
journalctl -u ccgroupd --no-pager -o json | jq -r 'select(.CCGROUPD_EVENT) | .CCGROUPD_EVENT' | tail -4 | tr '\n' ' '; echo
check "unit stopped cleanly (inactive, Result=success)" \
    test "$(systemctl show ccgroupd -p ActiveState --value)/$(systemctl show ccgroupd -p Result --value)" = inactive/success

echo "--- an engine that always fails"
write_config 256M /bin/false
journal_cursor=$(journalctl -u ccgroupd -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
systemctl start ccgroupd
echo "start returned $?"
check "unit ends up failed (the daemon gave up)" wait_for 150 bash -c 'test "$(systemctl is-failed ccgroupd)" = failed'
systemctl show ccgroupd -p ActiveState -p Result -p NRestarts -p ExecMainStatus -p StatusText
echo "engine_failed records: $(journalctl -u ccgroupd --after-cursor="$journal_cursor" -o json --no-pager | jq -r 'select(.CCGROUPD_EVENT=="engine_failed") | .MESSAGE' | sort | uniq -c)"
check "engine_failed logged" test "$(journalctl -u ccgroupd --after-cursor="$journal_cursor" -o json --no-pager | jq -r 'select(.CCGROUPD_EVENT=="engine_failed") | .CCGROUPD_EVENT' | wc -l)" -ge 1
check "daemon exit status 7 (engine failed)" test "$(systemctl show ccgroupd -p ExecMainStatus --value)" = 7
check "systemd did not restart the daemon into the same loop (NRestarts=0)" \
    test "$(systemctl show ccgroupd -p NRestarts --value)" = 0

finish
