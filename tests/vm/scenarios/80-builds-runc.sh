#!/bin/bash
# vm-timeout-s: 900
# Issue 13 with the real runc creating and removing each build's group, as BuildKit's runc
# executor does: `runc run` (no --keep) with linux.cgroupsPath /buildkit/<id> resolved in
# the engine's cgroup namespace, the group removed the moment the build exits. The engine
# is runc-builds/engine.sh (mode "exec", private cgroup namespace), which moves itself to
# /init like the Dagger entrypoint and runs runc itself, so runc runs inside the engine
# group with the engine's oom_score_adj. Must show, under [limits] memory = 1G and
# [builds] memory = 256M:
#  - runc's groups appear at <engine group>/buildkit/<id> and vanish when the build exits;
#  - two builds at once: a 400M hog OOM-killed alone, the other and the engine run on; the
#    oom_kill record names the killed build, its command, the victim's pid, name and RSS;
#  - a [[builds.rules]] command = "postgres*" build gets other limits, as it prints from
#    its own /sys/fs/cgroup/memory.max at its first instruction;
#  - `ccgroupctl top --once --json` (or the socket's builds operation) lists the builds
#    with their usage; a build_finished record for each build;
#  - a pids.max refusal in a build, attributed to it;
#  - a group-level OOM (the engine holding more than any build) kills a build, not the
#    engine: engine processes alive, engine restarts unchanged.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=runc-builds/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/runc-builds/lib.sh"

config=/etc/ccgroupd/config.toml
saved_config=$(mktemp)
cp "$config" "$saved_config"
postgres=/usr/local/bin/postgres-standin
cleanup() {
    rb_teardown
    forget_daemon_state
    cp "$saved_config" "$config"
    rm -f "$saved_config" "$postgres"
}
reset_unit
trap cleanup EXIT
mark_journal
rb_setup
# A build whose argv[0] is named postgres-something: python3 under another name.
ln -sf /usr/bin/python3 "$postgres"

{
    cat <<'EOF'
[limits]
cpus = 3
memory = "1G"
memory_swap = 0

[builds]
memory = "256M"
pids = 64

[[builds.rules]]
command = "postgres*"
memory = "512M"
pids = 100

[[builds.rules]]
command_regex = "build\\.py hog 700"
memory = "1G"

[monitor]
cpu_poll_interval_s = 1

[daemon]
log_format = "journal"

EOF
    rb_engine_toml
} >"$config"

build_py=$RB/build.py
py=(python3 -S "$build_py")

echo "--- start"
start_fresh
check "the stand-in engine serves requests" wait_for 60 rb_engine_alive
engine_pid=$(rb_engine_pid)
restarts_before=$(ccgroupctl status --json | jq '.engine.restarts')
echo "engine pid $engine_pid, oom_score_adj $(cat "/proc/$engine_pid/oom_score_adj"), cgroup $(cat "/proc/$engine_pid/cgroup"); restarts $restarts_before"
check "the engine moved itself to <engine group>/init" \
    grep -qx "0::${RB_GROUP#/sys/fs/cgroup}/init" "/proc/$engine_pid/cgroup"
check "the engine's /buildkit is <engine group>/buildkit" test -d "$RB_GROUP/buildkit"

echo "--- 1. runc creates <engine group>/buildkit/<id> and removes it when the build exits"
rb_build probe "${py[@]}" spin 6 8
check "runc created <engine group>/buildkit/probe" wait_for 60 test -d "$RB_GROUP/buildkit/probe"
check "the build's process runs in it" wait_for 30 test -n "$(rb_build_pid probe)"
runc_pid=$(pgrep -x runc | head -1)
echo "runc pid ${runc_pid:-none}: $(cat "/proc/$runc_pid/cgroup" 2>/dev/null)"
check "runc itself runs in the engine's <engine group>/init" \
    grep -qx "0::${RB_GROUP#/sys/fs/cgroup}/init" "/proc/$runc_pid/cgroup"
check "the probe build ended" wait_for 90 rb_done probe
rb_output probe
echo "probe: runc run exited $(rb_rc probe)"
check "runc removed <engine group>/buildkit/probe as the build exited" \
    wait_for 5 test ! -e "$RB_GROUP/buildkit/probe"
check "the probe build saw [builds] memory = 256M at its first instruction" \
    test "$(rb_limit_seen probe memory.max)" = 268435456
check "the probe build saw [builds] pids = 64" test "$(rb_limit_seen probe pids.max)" = 64
check "the probe build's oom_score_adj was reset to 0 (the engine's is -900)" \
    test "$(rb_limit_seen probe oom_score_adj)" = 0

echo "--- 2. two builds at once (+ a postgres one): the 400M hog is OOM-killed alone"
mark_journal
# Long enough to outlive the hog, the rule's checks and the builds query under emulation.
rb_build steady "${py[@]}" spin 90 32
rb_build pg "$postgres" -S "$build_py" spin 90 48
check "the steady and postgres builds run" \
    wait_for 90 bash -c "grep -q '^spin' $RB/builds/steady.out && grep -q '^spin' $RB/builds/pg.out"
rb_build hog "${py[@]}" hog 400
check "the hog build ended" wait_for 90 rb_done hog
rb_output hog
echo "hog: runc run exited $(rb_rc hog)"
check "the hog saw memory.max 256M at its first instruction" \
    test "$(rb_limit_seen hog memory.max)" = 268435456
check "the hog was killed (runc run exit 137)" test "$(rb_rc hog)" = 137
check "runc removed the hog's group at once" wait_for 5 test ! -e "$RB_GROUP/buildkit/hog"
journalctl -k --no-pager -o cat ${journal_cursor:+--after-cursor="$journal_cursor"} |
    grep -E 'oom-kill:|Killed process' | tail -n 4
check "the kernel's kill was local to the hog's group (oom_memcg = buildkit/hog)" \
    bash -c "journalctl -k --no-pager -o cat --after-cursor='$journal_cursor' | grep -q 'oom_memcg=${RB_GROUP#/sys/fs/cgroup}/buildkit/hog,task_memcg=${RB_GROUP#/sys/fs/cgroup}/buildkit/hog,'"
check "the steady build runs on" test -n "$(rb_build_pid steady)"
check "the postgres build runs on" test -n "$(rb_build_pid pg)"
check "the engine runs on" rb_engine_alive

oom_record() {  # the oom_kill record naming build ARG
    event_records oom_kill | jq -c --arg b "$1" 'select(.CCGROUPD_BUILD == $b)' | tail -1
}
check "ccgroupd logged oom_kill naming buildkit/hog" wait_for 30 test -n "$(oom_record buildkit/hog)"
record=$(oom_record buildkit/hog)
event_records oom_kill | jq -c '{MESSAGE, CCGROUPD_BUILD, CCGROUPD_BUILD_COMMAND, CCGROUPD_VICTIM_PID,
    CCGROUPD_VICTIM_COMM, CCGROUPD_VICTIM_RSS_BYTES, CCGROUPD_OOM_GROUPS}'
check "the oom_kill record names the hog's command" \
    grep -q 'build.py hog 400' <<<"$(jq -r '.CCGROUPD_BUILD_COMMAND // empty' <<<"$record")"
check "the oom_kill record names the victim's pid" \
    grep -qE '^[0-9]+$' <<<"$(jq -r '.CCGROUPD_VICTIM_PID // empty' <<<"$record")"
check "the oom_kill record names the victim python3" \
    test "$(jq -r '.CCGROUPD_VICTIM_COMM // empty' <<<"$record")" = python3
rss=$(jq -r '.CCGROUPD_VICTIM_RSS_BYTES // 0' <<<"$record")
check "the oom_kill record gives the victim's RSS ($rss bytes, > 200 MiB)" test "${rss:-0}" -gt 209715200

echo "--- 3. the postgres* rule"
check "the postgres build printed memory.max 512M at its first instruction ($(rb_limit_seen pg memory.max))" \
    test "$(rb_limit_seen pg memory.max)" = 536870912
check "the postgres build printed pids.max 100 at its first instruction ($(rb_limit_seen pg pids.max))" \
    test "$(rb_limit_seen pg pids.max)" = 100
check "its group's memory.max is 512M" test "$(cat "$RB_GROUP/buildkit/pg/memory.max")" = 536870912
check "the steady build kept the default 256M" \
    test "$(cat "$RB_GROUP/buildkit/steady/memory.max")" = 268435456

echo "--- 4. the builds, live"
top_json=$(rb_builds_json)
jq -c '.builds[] | {id, command, cpu_percent, memory_current_bytes, usage_usec, pids_current,
    limits}' \
    <<<"$top_json" || echo "not a builds reply: ${top_json:0:2000}"
for id in steady pg; do
    check "top lists the build $id with its usage" \
        jq -e --arg id "$id" '[.builds[] | select(.id == $id and .memory_current_bytes > 0
            and .usage_usec > 0 and .pids_current > 0)] | length == 1' <<<"$top_json"
done
check "top lists the postgres build's command and its 512M limit" \
    jq -e '[.builds[] | select(.id == "pg" and (.command | test("postgres-standin"))
        and .limits.memory == 536870912)] | length == 1' <<<"$top_json"
check "top shows the engine's usage" jq -e '.engine.memory_current_bytes > 0' <<<"$top_json"
ccgroupctl top --once 2>&1 || echo "(no ccgroupctl top)"
check "asking for the builds did not restart the engine" \
    test "$(ccgroupctl status --json | jq '.engine.restarts')" = "$restarts_before"

echo "--- 5. a pids.max refusal in a build"
rb_build forks "${py[@]}" forks 100 8
check "the forks build ended" wait_for 120 rb_done forks
rb_output forks
check "the kernel refused forks in the build (pids.max 64)" \
    grep -qE '^forks: [0-9]+ forked, [1-9][0-9]* refused' <<<"$(rb_output forks)"
pids_record() {
    event_records pids_max | jq -c 'select(.CCGROUPD_BUILD == "buildkit/forks")' | tail -1
}
check "ccgroupd logged pids_max naming buildkit/forks" wait_for 30 test -n "$(pids_record)"
event_records pids_max | jq -c '{MESSAGE, CCGROUPD_BUILD, CCGROUPD_BUILD_COMMAND}'
check "the pids_max record names the build's command" \
    grep -q 'build.py forks 100' <<<"$(pids_record | jq -r '.CCGROUPD_BUILD_COMMAND // empty')"
check "every pids_max record since the forks build started names it" \
    test -z "$(event_records pids_max | jq -c 'select(.CCGROUPD_BUILD != "buildkit/forks")')"

echo "--- 6. build_finished for each build"
check "the steady and postgres builds ended" wait_for 180 bash -c "[[ -f $RB/builds/steady.rc && -f $RB/builds/pg.rc ]]"
finished() {
    event_records build_finished | jq -c --arg b "buildkit/$1" 'select(.CCGROUPD_BUILD == $b)' | tail -1
}
for id in steady pg hog forks; do
    check "a build_finished record for buildkit/$id" wait_for 30 test -n "$(finished "$id")"
done
event_records build_finished | jq -c '{CCGROUPD_BUILD, CCGROUPD_COMMAND, CCGROUPD_DURATION_S,
    CCGROUPD_CPU_USAGE_S, CCGROUPD_MEMORY_PEAK_BYTES, CCGROUPD_OOM_KILLS, CCGROUPD_PIDS_REFUSED,
    CCGROUPD_ACCOUNTING}'
check "build_finished of the hog counts its OOM kill" \
    test "$(finished hog | jq -r '.CCGROUPD_OOM_KILLS // 0')" -ge 1
check "build_finished of the forks build counts refused forks" \
    test "$(finished forks | jq -r '.CCGROUPD_PIDS_REFUSED // 0')" -ge 1
check "build_finished of the steady build has its peak memory (> 32 MiB)" \
    test "$(finished steady | jq -r '.CCGROUPD_MEMORY_PEAK_BYTES // 0')" -gt 33554432
# Not a check: whether ccgroupd read a build's counters before runc removed its group.
echo "accounting of the build_finished records: $(event_records build_finished |
    jq -r '.CCGROUPD_ACCOUNTING' | sort | uniq -c | tr -s ' \n' ' ')"

echo "--- 7. a group-level OOM kills a build, not the engine (whose RSS is larger)"
mark_journal
rb_request "hold 550"
check "the engine holds 550 MiB of its own" wait_for 120 test -s "$RB/holder.pid"
holder=$(cat "$RB/holder.pid")
echo "engine holder pid $holder: RSS $(awk '/^VmRSS/ {print $2, $3}' "/proc/$holder/status"), oom_score_adj $(cat "/proc/$holder/oom_score_adj"), $(cat "/proc/$holder/cgroup")"
check "the engine's own processes have oom_score_adj -900" \
    test "$(cat "/proc/$holder/oom_score_adj")" = -900
rb_build grouphog "${py[@]}" hog 700
check "the group-level hog build ended" wait_for 120 rb_done grouphog
rb_output grouphog
echo "grouphog: runc run exited $(rb_rc grouphog)"
check "the command_regex rule gave the group hog memory.max 1G" \
    test "$(rb_limit_seen grouphog memory.max)" = 1073741824
journalctl -k --no-pager -o cat --after-cursor="$journal_cursor" | grep -E 'oom-kill:|Killed process'
check "the kernel's kill was group-level (oom_memcg = the engine group)" \
    bash -c "journalctl -k --no-pager -o cat --after-cursor='$journal_cursor' | grep -q 'oom_memcg=${RB_GROUP#/sys/fs/cgroup},task_memcg=${RB_GROUP#/sys/fs/cgroup}/buildkit/grouphog,'"
check "the engine's holder (larger than the build) survived" kill -0 "$holder"
check "the engine survived" kill -0 "$engine_pid"
check "the engine's restarts are unchanged ($restarts_before)" \
    test "$(ccgroupctl status --json | jq '.engine.restarts')" = "$restarts_before"
check "ccgroupd logged oom_kill naming buildkit/grouphog" \
    wait_for 30 test -n "$(oom_record buildkit/grouphog)"
event_records oom_kill | jq -c '{MESSAGE, CCGROUPD_BUILD, CCGROUPD_VICTIM_COMM, CCGROUPD_VICTIM_RSS_BYTES}'
check "a build_finished record for buildkit/grouphog" wait_for 30 test -n "$(finished grouphog)"

echo "--- status"
ccgroupctl status --json | jq -c '.builds'

echo "--- stop"
check "systemctl stop ccgroupd succeeds" systemctl stop ccgroupd
check "no runc left" test -z "$(pgrep -x runc)"
check "no build group left" test ! -e "$RB_GROUP/buildkit"

finish
