#!/bin/bash
# Real kernel, real systemd: ccgroupctl against the ccgroupd service (issue 4's "Must show").
#
# Runs as root in the guest. The engine is a stand-in that holds 150 MiB, so that
# memory limits below its usage can be shown; config: cpus 1, memory 1G, no pids limit.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# run_ctl ARGS...: sets $out (stdout+stderr) and $rc of one ccgroupctl call
run_ctl() {
    out=$(ccgroupctl "$@" 2>&1)
    rc=$?
    echo "  \$ ccgroupctl $* -> exit $rc"
    sed 's/^/  | /' <<<"$out"
}
as_nobody() {  # as uid 65534, optionally with supplementary groups (comma list)
    local groups=$1
    shift
    local group_option=--clear-groups
    [[ -z $groups ]] || group_option=--groups=$groups
    out=$(setpriv --reuid=65534 --regid=65534 "$group_option" ccgroupctl "$@" 2>&1)
    rc=$?
    echo "  \$ (uid 65534${groups:+, groups $groups}) ccgroupctl $* -> exit $rc"
    sed 's/^/  | /' <<<"$out"
}
one_line() { [[ $(wc -l <<<"$out") -eq 1 && $out != *Traceback* ]]; }
engine_file() { cat "$engine/$1"; }
# The unit allows 3 starts per 30 min (StartLimitBurst=3), and a manual restart counts:
# forget earlier starts before each restart here, or the fourth one is refused.
restart_daemon() {
    systemctl reset-failed ccgroupd
    systemctl restart ccgroupd
}
wait_active() {  # until the daemon answers on its socket again (after a restart by systemd)
    for _ in $(seq 120); do
        if systemctl is-active -q ccgroupd && ccgroupctl status >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    return 1
}

cat >/usr/local/bin/fake-engine <<'EOF'
#!/usr/bin/python3
# Holds 150 MiB (every page touched, so memory.current counts it) until killed.
import signal
hog = bytearray(150 * 1024 * 1024)
for offset in range(0, len(hog), 4096):
    hog[offset] = 1
signal.pause()
EOF
chmod 0755 /usr/local/bin/fake-engine
cat >/etc/ccgroupd/config.toml <<'EOF'
[limits]
cpus = 1
memory = "1G"

[engine]
command = ["/usr/local/bin/fake-engine"]
stop_grace_s = 5.0
restart_initial_delay_s = 0.5
restart_burst = 50

[api]
request_timeout_s = 3.0
EOF
created_group=0
if ! getent group ccgroupd >/dev/null; then
    groupadd --system ccgroupd
    created_group=1
fi
# shellcheck disable=SC2329  # invoked by the EXIT trap
clean_up() {
    forget_daemon_state
    if ((created_group)); then groupdel ccgroupd; fi
}
trap clean_up EXIT
status_gid=$(getent group ccgroupd | cut -d: -f3)

# Earlier scenarios in the same boot may have left the unit running, failed or
# rate-limited, and changes in the state directory: start from a clean slate.
start_fresh
engine=$(engine_cgroup)
echo "engine cgroup: $engine"
check "config limits in force: cpu.max $(engine_file cpu.max), memory.max $(engine_file memory.max)" \
    test "$(engine_file cpu.max)/$(engine_file memory.max)" = "100000 100000/1073741824"

echo "== set --cpus 2 --memory 512M"
run_ctl set --cpus 2 --memory 512M
check "set exits 0" test "$rc" -eq 0
check "cpu.max is '200000 100000' when set returns (got '$(engine_file cpu.max)')" \
    test "$(engine_file cpu.max)" = "200000 100000"
check "memory.max is 512 MiB when set returns (got $(engine_file memory.max))" \
    test "$(engine_file memory.max)" = 536870912
run_ctl status
check "status shows the persisted source and its file" \
    grep -qF "memory       512 MiB      (persisted: /var/lib/ccgroupd/limits.json)" <<<"$out"

echo "== persistence"
restart_daemon
check "after systemctl restart: cpu.max $(engine_file cpu.max), memory.max $(engine_file memory.max)" \
    test "$(engine_file cpu.max)/$(engine_file memory.max)" = "200000 100000/536870912"
main_pid=$(systemctl show -p MainPID --value ccgroupd)
systemctl reset-failed ccgroupd
# MainPID is 0 when the daemon is not running, and kill -9 0 would kill this job.
[[ $main_pid -gt 0 ]] && kill -9 "$main_pid"
sleep 2
check "systemd restarted the daemon after kill -9 of pid $main_pid" wait_active
check "after kill -9: cpu.max $(engine_file cpu.max), memory.max $(engine_file memory.max)" \
    test "$(engine_file cpu.max)/$(engine_file memory.max)" = "200000 100000/536870912"
run_ctl set --pids 100 --runtime
check "--runtime applies at once (pids.max $(engine_file pids.max))" \
    test "$(engine_file pids.max)" = 100
restart_daemon
check "--runtime does not survive a restart (pids.max $(engine_file pids.max))" \
    test "$(engine_file pids.max)" = max
check "persisted values still do (memory.max $(engine_file memory.max))" \
    test "$(engine_file memory.max)" = 536870912

echo "== permissions"
before=$(cat "$engine/cpu.max" "$engine/memory.max")
as_nobody "" set --cpus 1
check "non-root set: exit 4" test "$rc" -eq 4
check "non-root set: says permission denied in one line" \
    bash -c '[[ $0 == "ccgroupctl: permission denied"* ]]' "$out"
check "non-root set changed nothing" test "$(cat "$engine/cpu.max" "$engine/memory.max")" = "$before"
as_nobody "" status
check "non-root status outside the status group: exit 4" test "$rc" -eq 4
as_nobody "$status_gid" status
check "status as a member of group ccgroupd works" test "$rc" -eq 0
as_nobody "$status_gid" reset
check "status group does not allow reset: exit 4" test "$rc" -eq 4

echo "== bad input: one line, exit 3, nothing changed"
before=$(cat "$engine"/{cpu.max,memory.max,memory.high,pids.max})
for args in "--cpus -1" "--cpus 0" "--memory 12XB" "--memory 1G --memory-high 2G" \
        "--memory-high 600M" "--cpus $(( $(nproc) + 1 ))"; do
    # shellcheck disable=SC2086  # split on purpose
    run_ctl set $args
    check "set $args: exit 3" test "$rc" -eq 3
    check "set $args: one line, no traceback" one_line
done
check "bad input changed nothing" \
    test "$(cat "$engine"/{cpu.max,memory.max,memory.high,pids.max})" = "$before"

echo "== hostile clients while status is asked"
started_ns=$(date +%s%N)
ccgroupctl status >/dev/null
alone_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
"$CCGROUPD_PYTHON" - <<'EOF' &
import os, socket, time
path = "/run/ccgroupd/ccgroupd.sock"
silent = socket.socket(socket.AF_UNIX); silent.connect(path)           # never writes
garbage = socket.socket(socket.AF_UNIX); garbage.connect(path)
garbage.sendall(b"\x00\xffnot json at all\n")
huge = socket.socket(socket.AF_UNIX); huge.connect(path)
try:
    huge.sendall(b"x" * (10 * 1024 * 1024))                           # a 10 MB line
except OSError as exc:
    print(f"  10 MB sender stopped by the daemon: {exc.strerror}")
time.sleep(4)
print(f"  garbage client got: {garbage.recv(4096).decode(errors='replace').strip()}")
print(f"  silent client got: {silent.recv(4096).decode(errors='replace').strip()}")
EOF
hostile=$!
sleep 1
started_ns=$(date +%s%N)
run_ctl status
busy_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
check "status answers while hostile clients are connected (${busy_ms} ms; alone ${alone_ms} ms)" \
    test "$rc" -eq 0 -a "$busy_ms" -lt $((alone_ms * 2 + 1000))
wait "$hostile"

echo "== memory below usage"
usage=$(engine_file memory.current)
echo "  memory.current = $usage"
before=$(engine_file memory.max)
run_ctl set --memory 64M
check "set --memory 64M below usage is refused: exit 3" test "$rc" -eq 3
check "the refusal quotes the usage" grep -q "at or below current usage" <<<"$out"
check "memory.max unchanged ($(engine_file memory.max))" test "$(engine_file memory.max)" = "$before"
run_ctl set --memory 64M --force
check "set --memory 64M --force applies (memory.max $(engine_file memory.max))" \
    test "$rc" -eq 0 -a "$(engine_file memory.max)" = 67108864
sleep 3
run_ctl events --since "5 min ago"
check "events shows the OOM kill the forced limit caused" grep -q "oom_kill" <<<"$out"
# Any local user can send a record with ccgroupd's identifier and event fields.
printf 'MESSAGE=forged by uid 65534\nSYSLOG_IDENTIFIER=ccgroupd\nCCGROUPD_EVENT=oom_kill\n' |
    runuser -u nobody -- logger --journald
sleep 1
check "journald holds the forged record" \
    bash -c 'journalctl --since "5 min ago" CCGROUPD_EVENT=oom_kill -o cat | grep -q "forged by uid"'
run_ctl events --since "5 min ago"
check "events does not show it" bash -c '! grep -q "forged by uid" <<<"$1"' _ "$out"

echo "== reset"
run_ctl reset
check "reset exits 0" test "$rc" -eq 0
check "reset restores the config file's values: cpu.max $(engine_file cpu.max), memory.max $(engine_file memory.max)" \
    test "$(engine_file cpu.max)/$(engine_file memory.max)" = "100000 100000/1073741824"
check "the state file holds no changes" \
    grep -q '"limits": {}' /var/lib/ccgroupd/limits.json

echo "== start-up cost: ccgroupctl set vs python3 -c pass (20 runs each)"
time_runs() {
    local started_ns
    started_ns=$(date +%s%N)
    for _ in $(seq 20); do "$@" >/dev/null 2>&1; done
    echo $(( ($(date +%s%N) - started_ns) / 20000000 ))
}
pass_ms=$(time_runs python3 -c pass)
venv_pass_ms=$(time_runs "$CCGROUPD_PYTHON" -c pass)
set_ms=$(time_runs ccgroupctl set --cpus 1)
help_ms=$(time_runs ccgroupctl --help)
status_ms=$(time_runs ccgroupctl status)
status_json_ms=$(time_runs ccgroupctl status --json)
echo "  python3 -c pass ${pass_ms} ms, venv python3 -c pass ${venv_pass_ms} ms," \
    "ccgroupctl --help ${help_ms} ms, status ${status_ms} ms, status --json ${status_json_ms} ms," \
    "set --cpus 1 ${set_ms} ms (per run)"
echo "startup_ms pass=$pass_ms venv_pass=$venv_pass_ms help=$help_ms status=$status_ms" \
    "status_json=$status_json_ms set=$set_ms" >"$CCGROUPD_RESULTS/ctl-startup.txt"
"$CCGROUPD_PYTHON" -X importtime -c 'from ccgroupd.client.ctl import main' \
    2>"$CCGROUPD_RESULTS/ctl-importtime.txt"
tail -n 3 "$CCGROUPD_RESULTS/ctl-importtime.txt"

echo "== daemon stopped"
systemctl stop ccgroupd
run_ctl status
check "status with the daemon stopped: exit 5" test "$rc" -eq 5
check "it says how to start it, in one line" \
    bash -c '[[ $0 == *"systemctl start ccgroupd"* ]]' "$out"
check "no traceback" one_line

journalctl -b -o json --no-pager CCGROUPD_EVENT=limits_changed \
    >"$CCGROUPD_RESULTS/limits_changed.json"
echo "limits_changed records: $(wc -l <"$CCGROUPD_RESULTS/limits_changed.json")"
journalctl -b --no-pager CCGROUPD_EVENT=limits_changed | tail -n 5

echo "$failures failure(s)"
finish
