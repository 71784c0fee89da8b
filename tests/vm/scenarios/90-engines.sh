#!/bin/bash
# vm-timeout-s: 420
# Several engines under one budget ([budget] and [engines.NAME] tables). Must show: alpha
# (exec) and beta (the stand-in in docker) each hold their own cpu.max, memory.max,
# memory.low and cpu.weight, the budget group <unit>/engines the budget's (memory = "75%"
# resolved against MemTotal); a memory hog in alpha is OOM-killed there while beta runs on
# untouched, and the oom_kill record names alpha; `ccgroupctl --engine alpha set` changes
# alpha only and survives a restart, `set` without --engine is refused (exit 2); a reload
# adds a third engine (drop-in) without restarting the others, and another removes it with
# its group; io_max on alpha holds a direct dd to 10 MiB/s; an engine that crash-loops is
# given up while the others and the unit keep running; `ccgroupctl status` lists them all.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image=ccgroupd-standin:test
unit_cg=/sys/fs/cgroup/system.slice/ccgroupd.service
budget_cg=$unit_cg/engines
alpha_cg=$budget_cg/alpha beta_cg=$budget_cg/beta gamma_cg=$budget_cg/gamma delta_cg=$budget_cg/delta
config=/etc/ccgroupd/config.toml
dropins=/etc/ccgroupd/config.d
alpha_engine=/usr/local/bin/vm90-engine
io_dir=/var/lib/vm90-io
beta_socket=/run/dagger/beta/engine.sock
STANDIN_SOCKET=$beta_socket  # for lib.sh's standin

docker_host_save /run/dagger /var/lib/dagger "$dropins" /etc/docker

# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
    forget_daemon_state
    docker rm --force ccgroupd-beta >/dev/null 2>&1
    docker rmi "$image" >/dev/null 2>&1
    systemctl stop docker.socket docker.service containerd.service
    rm -f "$dropins/gamma.toml" "$dropins/delta.toml"
    rm -rf "$io_dir" "$alpha_engine"
    local name
    for name in alpha beta gamma delta; do  # each engine's own directories
        rm -rf "/var/lib/dagger/$name" "/run/dagger/$name"
    done
    docker_host_restore
}
reset_unit
trap cleanup EXIT
mark_journal

# status_of NAME JQ: a field of engine NAME in `ccgroupctl status --json`.
status_of() {
    ccgroupctl status --json | jq -r --arg n "$1" ".engines[] | select(.name == \$n) | $2"
}
engine_pid() { status_of "$1" .engine.pid; }
engine_state() { status_of "$1" .engine.state; }
state_is() { [[ $(engine_state "$1") == "$2" ]]; }
# in_group GROUP COMMAND...: run COMMAND inside GROUP (the shell moves itself there first).
in_group() {
    bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' in_group "$@"
}
file_is() {  # file_is FILE VALUE
    [[ $(cat "$1" 2>/dev/null) == "$2" ]]
}
check_file() {  # check_file WHAT FILE VALUE
    check "$1: $(basename "$2") is '$3' (got '$(cat "$2" 2>/dev/null)')" file_is "$2" "$3"
}
records_of() {  # records_of EVENT ENGINE: EVENT records of ENGINE since mark_journal
    event_records "$1" | jq -c --arg n "$2" 'select(.CCGROUPD_ENGINE == $n)'
}
has_records() { [[ -n $(records_of "$1" "$2") ]]; }
restart_daemon() {  # the unit's start limit counts manual restarts
    systemctl reset-failed ccgroupd
    systemctl restart ccgroupd
}

# An exec engine that stays up until SIGTERM.
cat >"$alpha_engine" <<'EOF'
#!/bin/bash
trap 'exit 0' TERM
sleep infinity &
wait
EOF
chmod 0755 "$alpha_engine"
mkdir -p "$io_dir" "$dropins"

write_config() {
    cat >"$config" <<EOF
[budget]
cpus = 3
memory = "75%"

[engines.alpha]
mode = "exec"
command = ["$alpha_engine"]
stop_grace_s = 5
cpus = 1
memory = "200M"
memory_swap = 0
memory_low = "128M"
cpu_weight = 200

[[engines.alpha.io_max]]
path = "$io_dir"
wbps = "10M"

[engines.beta]
mode = "docker"
image = "$image"
command = ["--socket", "$beta_socket", "--marker", "/run/dagger/beta/standin-terminated",
           "--ready-delay-s", "1"]
ready_socket = "$beta_socket"
ready_timeout_s = 90
stop_grace_s = 10
cpus = 0.5
memory = "256M"
memory_low = "64M"
cpu_weight = 50

[monitor]
cpu_poll_interval_s = 1

[daemon]
log_format = "journal"
EOF
}

echo "--- docker (cgroupfs driver) and the stand-in image for beta"
mkdir -p /etc/docker
echo '{"exec-opts": ["native.cgroupdriver=cgroupfs"]}' >"$DOCKER_DAEMON_JSON"
check "docker starts" systemctl start docker
check "the stand-in image imports" docker import --change 'ENTRYPOINT ["/usr/local/bin/standin-engine"]' \
    "$STANDIN_DIR/rootfs.tar" "$image"

echo "--- 1. alpha (exec) and beta (docker) under a budget of cpus = 3, memory = \"75%\""
write_config
rm -rf /var/lib/ccgroupd
started_s=$SECONDS
if ! systemctl start ccgroupd; then
    echo "FAILED: ccgroupd did not start with two engines; nothing else can be shown"
    journalctl -u ccgroupd --no-pager -o cat | tail -n 40
    exit 1
fi
echo "systemctl start took $((SECONDS - started_s)) s"
alpha_pid=$(engine_pid alpha)
beta_pid=$(engine_pid beta)
beta_standin_pid=$(docker inspect --format '{{.State.Pid}}' ccgroupd-beta)
echo "alpha engine pid $alpha_pid; beta engine pid $beta_pid (docker client), stand-in pid on the host $beta_standin_pid"
check "alpha is running" state_is alpha running
check "beta is running" state_is beta running
check "alpha's engine runs in $alpha_cg" grep -qx "$alpha_pid" "$alpha_cg/cgroup.procs"
check "beta's stand-in runs below $beta_cg" \
    grep -q "^0::${beta_cg#/sys/fs/cgroup}/" "/proc/$beta_standin_pid/cgroup"
check "beta's socket answers" test "$(standin ping)" = pong
check_file alpha "$alpha_cg/cpu.max" "100000 100000"
check_file alpha "$alpha_cg/memory.max" 209715200
check_file alpha "$alpha_cg/memory.low" 134217728
check_file alpha "$alpha_cg/cpu.weight" 200
check_file beta "$beta_cg/cpu.max" "50000 100000"
check_file beta "$beta_cg/memory.max" 268435456
check_file beta "$beta_cg/memory.low" 67108864
check_file beta "$beta_cg/cpu.weight" 50
check_file budget "$budget_cg/cpu.max" "300000 100000"
mem_total_kb=$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)
expected_budget=$((mem_total_kb * 1024 * 75 / 100 / 4096 * 4096))
budget_max=$(cat "$budget_cg/memory.max")
echo "MemTotal ${mem_total_kb} kB = $((mem_total_kb * 1024)) bytes; 75% rounded down to a page:" \
    "$expected_budget bytes ($((expected_budget / 1048576)) MiB); budget memory.max: $budget_max"
check "the budget's memory.max is 75% of MemTotal, within a page ($budget_max vs $expected_budget)" \
    test "$((budget_max > expected_budget ? budget_max - expected_budget : expected_budget - budget_max))" -le 4096
check "the budget group holds no process of its own" test -z "$(cat "$budget_cg/cgroup.procs")"

echo "--- 5. io_max on alpha: wbps = 10M on the disk holding $io_dir"
io_source=$(findmnt -no SOURCE --target "$io_dir")
io_disk=$(lsblk -no PKNAME "$io_source" | head -1)
io_disk=${io_disk:-${io_source#/dev/}}
io_device=$(lsblk -dno MAJ:MIN "/dev/$io_disk" | tr -d ' ')
echo "$io_dir is on $io_source, disk /dev/$io_disk ($io_device); alpha io.max: $(cat "$alpha_cg/io.max")"
check "alpha's io.max holds '$io_device ... wbps=10485760'" \
    grep -q "^$io_device .*wbps=10485760" "$alpha_cg/io.max"
check "beta's io.max is empty" test -z "$(cat "$beta_cg/io.max")"
io_json=$(ccgroupctl --engine alpha status --json | jq -c '.io_max')
echo "ccgroupctl --engine alpha status --json: io_max $io_json"
check "status --json shows the io_max entry with its device" \
    test "$(jq -r --arg p "$io_dir" '.[] | select(.path == $p) | "\(.device) \(.wbps)"' <<<"$io_json")" \
    = "$io_device 10485760"
dd_started_ns=$(date +%s%N)
dd_out=$(in_group "$alpha_cg" dd if=/dev/zero of="$io_dir/f" bs=1M count=40 oflag=direct 2>&1)
dd_rc=$?
dd_ms=$((($(date +%s%N) - dd_started_ns) / 1000000))
rm -f "$io_dir/f"
echo "dd: $(tail -1 <<<"$dd_out")"
# dd's own figure times the writes alone; the wall time adds starting bash and dd (slow
# under TCG).
dd_s=$(sed -n 's/.* copied, \([0-9.]*\) s,.*/\1/p' <<<"$dd_out")
echo "dd of 40 MiB (oflag=direct) inside alpha: ${dd_s:-?} s by dd," \
    "$(awk -v s="${dd_s:-0}" 'BEGIN {printf "%.2f", (s > 0 ? 40 / s : 0)}') MiB/s;" \
    "wall time $(awk -v ms="$dd_ms" 'BEGIN {printf "%.2f s, %.2f MiB/s", ms / 1000, 40000 / ms}')"
check "dd inside alpha succeeded" test "$dd_rc" -eq 0 -a -n "$dd_s"
check "dd took 4 s within 10% (${dd_s:-?} s)" awk -v s="${dd_s:-0}" 'BEGIN {exit !(s >= 3.6 && s <= 4.4)}'
echo "alpha io.stat: $(cat "$alpha_cg/io.stat")"

echo "--- 2. a memory hog in alpha (400 MiB against memory.max 200 MiB); beta untouched"
alpha_ooms_before=$(awk '$1 == "oom_kill" {print $2}' "$alpha_cg/memory.events")
in_group "$alpha_cg" python3 -c 'x = b"x" * (400 << 20)'
hog_rc=$?
echo "the hog exited $hog_rc (137: SIGKILL)"
check "the hog was killed (exit $hog_rc)" test "$hog_rc" -eq 137
alpha_ooms=$(awk '$1 == "oom_kill" {print $2}' "$alpha_cg/memory.events")
echo "alpha memory.events: $(tr '\n' ' ' <"$alpha_cg/memory.events")"
echo "beta memory.events: $(tr '\n' ' ' <"$beta_cg/memory.events")"
check "alpha's oom_kill went up ($alpha_ooms_before -> $alpha_ooms)" test "$alpha_ooms" -gt "$alpha_ooms_before"
check "beta's oom_kill is still 0" grep -qx 'oom_kill 0' "$beta_cg/memory.events"
check "the budget's oom_kill counts alpha's kill only" \
    test "$(awk '$1 == "oom_kill" {print $2}' "$budget_cg/memory.events")" = "$alpha_ooms"
check "ccgroupd logged oom_kill with CCGROUPD_ENGINE=alpha" \
    wait_for 30 has_records oom_kill alpha
records_of oom_kill alpha | jq -c '{MESSAGE, CCGROUPD_ENGINE, CCGROUPD_CGROUP}'
check "no oom_kill record names beta" test -z "$(records_of oom_kill beta)"
check "beta's engine pid is unchanged ($beta_pid -> $(engine_pid beta))" test "$(engine_pid beta)" = "$beta_pid"
check "beta's stand-in pid is unchanged" \
    test "$(docker inspect --format '{{.State.Pid}}' ccgroupd-beta)" = "$beta_standin_pid"
check "beta still answers" test "$(standin ping)" = pong
check "beta is running with 0 restarts" test "$(status_of beta '"\(.engine.state) \(.engine.restarts)"')" = "running 0"
echo "alpha after the kill: $(status_of alpha '"\(.engine.state) pid \(.engine.pid) restarts \(.engine.restarts)"')"

echo "--- 3. ccgroupctl --engine alpha set --memory 300M; set without --engine"
beta_memory_before=$(cat "$beta_cg/memory.max")
check "ccgroupctl --engine alpha set --memory 300M succeeds" ccgroupctl --engine alpha set --memory 300M
check_file alpha "$alpha_cg/memory.max" 314572800
check_file "beta (unchanged)" "$beta_cg/memory.max" "$beta_memory_before"
out=$(ccgroupctl set --cpus 1 2>&1)
rc=$?
echo "ccgroupctl set --cpus 1 -> exit $rc: $out"
check "set without --engine is refused with exit 2" test "$rc" -eq 2
check_file "alpha (unchanged by the refused set)" "$alpha_cg/cpu.max" "100000 100000"
check_file "beta (unchanged by the refused set)" "$beta_cg/cpu.max" "50000 100000"
echo "/var/lib/ccgroupd/engines/alpha/limits.json: $(cat /var/lib/ccgroupd/engines/alpha/limits.json 2>&1)"
check "the change is persisted in /var/lib/ccgroupd/engines/alpha/limits.json" \
    grep -q '"memory"' /var/lib/ccgroupd/engines/alpha/limits.json
check "systemctl restart ccgroupd succeeds" restart_daemon
check_file "alpha after the restart" "$alpha_cg/memory.max" 314572800
check_file "beta after the restart" "$beta_cg/memory.max" 268435456
check "alpha is running after the restart" wait_for 30 state_is alpha running
check "beta is running after the restart" wait_for 60 state_is beta running

echo "--- 4. a reload adds gamma (drop-in $dropins/gamma.toml), another removes it"
alpha_pid=$(engine_pid alpha)
beta_pid=$(engine_pid beta)
beta_standin_pid=$(docker inspect --format '{{.State.Pid}}' ccgroupd-beta)
echo "before: alpha pid $alpha_pid, beta pid $beta_pid (stand-in $beta_standin_pid)"
mark_journal
cat >"$dropins/gamma.toml" <<EOF
[engines.gamma]
command = ["$alpha_engine"]
stop_grace_s = 5
cpus = 0.5
memory = "64M"
EOF
check "ccgroupctl reload (gamma added) succeeds" ccgroupctl reload >/dev/null
check "gamma is running" wait_for 30 state_is gamma running
gamma_pid=$(engine_pid gamma)
echo "gamma pid $gamma_pid; $gamma_cg: cpu.max $(cat "$gamma_cg/cpu.max"), memory.max $(cat "$gamma_cg/memory.max")"
check "gamma runs in its own group $gamma_cg" grep -qx "$gamma_pid" "$gamma_cg/cgroup.procs"
check_file gamma "$gamma_cg/memory.max" 67108864
echo "after: alpha pid $(engine_pid alpha), beta pid $(engine_pid beta) (stand-in $(docker inspect --format '{{.State.Pid}}' ccgroupd-beta))"
check "alpha's pid is unchanged" test "$(engine_pid alpha)" = "$alpha_pid"
check "beta's pid is unchanged" test "$(engine_pid beta)" = "$beta_pid"
check "beta's stand-in pid is unchanged" \
    test "$(docker inspect --format '{{.State.Pid}}' ccgroupd-beta)" = "$beta_standin_pid"
for name in alpha beta; do
    check "no engine_restarting or engine_started record for $name" \
        test -z "$(records_of engine_restarting "$name")$(records_of engine_started "$name")"
done
records_of engine_started gamma | jq -c '{MESSAGE, CCGROUPD_ENGINE}'
rm -f "$dropins/gamma.toml"
check "ccgroupctl reload (gamma removed) succeeds" ccgroupctl reload >/dev/null
check "gamma's group is removed" wait_for 30 test ! -e "$gamma_cg"
check "gamma's engine process is gone" wait_for 10 bash -c "! kill -0 $gamma_pid 2>/dev/null"
check "status lists alpha and beta only" \
    test "$(ccgroupctl status --json | jq -r '[.engines[].name] | sort | join(" ")')" = "alpha beta"
check "alpha's pid is still unchanged" test "$(engine_pid alpha)" = "$alpha_pid"
check "beta's pid is still unchanged" test "$(engine_pid beta)" = "$beta_pid"

echo "--- 6. delta crash-loops (exits 1 at once; restart_burst = 2): given up, the rest runs"
mark_journal
cat >"$dropins/delta.toml" <<EOF
[engines.delta]
command = ["/bin/sh", "-c", "exit 1"]
restart_burst = 2
restart_initial_delay_s = 0
cpus = 0.5
memory = "64M"
EOF
check "ccgroupctl reload (delta added) succeeds" ccgroupctl reload >/dev/null
check "delta is given up: state failed in status --json" wait_for 60 state_is delta failed
echo "delta: $(ccgroupctl --engine delta status --json | jq -c .engine)"
check "engine_failed logged for delta" wait_for 10 has_records engine_failed delta
records_of engine_failed delta | jq -c '{MESSAGE, CCGROUPD_ENGINE, PRIORITY}'
echo "unit: $(systemctl show ccgroupd -p ActiveState -p SubState -p StatusText | tr '\n' ' ')"
check "systemctl is-active ccgroupd: active" test "$(systemctl is-active ccgroupd)" = active
check "alpha is still running, same pid" test "$(status_of alpha '"\(.engine.state) \(.engine.pid)"')" = "running $alpha_pid"
check "beta is still running, same pid" test "$(status_of beta '"\(.engine.state) \(.engine.pid)"')" = "running $beta_pid"
check "beta still answers" test "$(standin ping)" = pong

echo "--- 7. ccgroupctl status"
ccgroupctl status >/dev/null  # the budget's CPU use is a rate: a first sample
sleep 2
table=$(ccgroupctl status 2>&1)
echo "$table"
for name in alpha beta delta; do
    check "the table has a row for $name" grep -q "^$name " <<<"$table"
done
check "the table shows the budget's group" grep -qx "budget:  $budget_cg" <<<"$table"
check "the budget's CPU use is known (not 'cpu ?')" grep -q '^  in use  *cpu [0-9.]* of 3 CPUs' <<<"$table"
check "the budget's guaranteed line sums memory_low (128M + 64M)" \
    grep -q '^  guaranteed  *memory_low 192 MiB' <<<"$table"
ccgroupctl status --json | jq -c '.budget | {usage, guarantees, shares}'

rm -f "$dropins/delta.toml"
check "ccgroupctl reload (delta removed) succeeds" ccgroupctl reload >/dev/null
check "delta's group is removed" wait_for 30 test ! -e "$delta_cg"

echo "--- stop"
check "systemctl stop ccgroupd succeeds" systemctl stop ccgroupd
check "the engines' groups are gone" test ! -e "$budget_cg"
check "no container left" wait_for 20 bash -c '[[ -z $(docker ps -aq) ]]'

finish
