#!/bin/bash
# Real kernel, real systemd: the Prometheus endpoint (issue 8's "Must show").
#
# With [metrics] enabled, a scrape matches the engine group's kernel files read just
# before and just after it (cpu.max, memory.current, memory.events, cpu.stat); an OOM
# kill in the group raises the oom_kill counter by exactly the kernel's delta; the
# endpoint is not reachable through a non-loopback address of the guest.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port=9847
dummy_address=10.0.2.15

cat >/etc/ccgroupd/config.toml <<EOF
[limits]
cpus = 1.5
memory = "256M"
memory_high = "224M"
memory_swap = "0"
pids = 200

[engine]
command = ["/usr/bin/sleep", "infinity"]  # a stand-in engine
stop_grace_s = 5.0

[metrics]
enabled = true
port = $port
EOF

# compare ENGINE_GROUP_DIR: scrape between two reads of the kernel files; every value
# must lie between them (memory.current: within 1 MiB of that range, it moves).
cat >/run/metrics-compare.py <<'EOF'
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

group, url = Path(sys.argv[1]), sys.argv[2]


def kernel() -> dict[str, int]:
    values = {}
    quota, period = (group / "cpu.max").read_text().split()
    values["cpu.max"] = float(quota) / float(period)
    values["memory.current"] = int((group / "memory.current").read_text())
    stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
    values["working set"] = values["memory.current"] - int(stat["inactive_file"])
    for name in ("memory.events", "cpu.stat"):
        for line in (group / name).read_text().splitlines():
            key, value = line.split()
            values[f"{name} {key}"] = int(value)
    return values


before = kernel()
text = urllib.request.urlopen(url, timeout=5).read().decode()
after = kernel()
scraped = {(s.name, s.labels.get("event")): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}
pairs = [
    ("cpu.max", ("ccgroupd_cpu_limit_cpus", None), 1, 0),
    ("memory.current", ("ccgroupd_memory_current_bytes", None), 1, 1 << 20),
    ("working set", ("ccgroupd_memory_working_set_bytes", None), 1, 1 << 20),
    ("cpu.stat usage_usec", ("ccgroupd_cpu_usage_seconds_total", None), 1e-6, 0),
    ("cpu.stat nr_periods", ("ccgroupd_cpu_periods_total", None), 1, 0),
    ("cpu.stat nr_throttled", ("ccgroupd_cpu_throttled_periods_total", None), 1, 0),
    ("cpu.stat throttled_usec", ("ccgroupd_cpu_throttled_seconds_total", None), 1e-6, 0),
] + [(f"memory.events {key}", ("ccgroupd_memory_events_total", key), 1, 0)
     for key in ("low", "high", "max", "oom", "oom_kill")]
failures = 0
for file_key, metric, scale, slack in pairs:
    low, high = sorted((before[file_key], after[file_key]))
    value = scraped.get(metric)
    ok = value is not None and low - slack - 1e-6 <= value / scale <= high + slack + 1e-6
    failures += not ok
    print(f"  {'ok' if ok else 'MISMATCH'}: {file_key} {low}..{high} -> {metric[0]}"
          f"{'{event=' + metric[1] + '}' if metric[1] else ''} = {value}")
sys.exit(failures)
EOF
# metric NAME [LABEL=VALUE]: one sample's value from a scrape now
metric() {
    "$CCGROUPD_PYTHON" - "$@" <<EOF
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://127.0.0.1:$port/metrics", timeout=5).read().decode()
name, wanted = sys.argv[1], dict(pair.split("=", 1) for pair in sys.argv[2:])
print(next(int(s.value) for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == name and wanted.items() <= s.labels.items()))
EOF
}
# connects HOST PORT: whether a TCP connection to HOST:PORT succeeds
# shellcheck disable=SC2317,SC2329  # invoked through check and wait_for
connects() {
    "$CCGROUPD_PYTHON" -c 'import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()' "$1" "$2" 2>/dev/null
}
# shellcheck disable=SC2317,SC2329  # invoked through check
refused() { ! connects "$@"; }
# shellcheck disable=SC2317,SC2329  # invoked by the EXIT trap
cleanup() {
    ip link del dummy0 2>/dev/null
    [[ -z ${listener:-} ]] || kill "$listener" 2>/dev/null
    rm -f /run/metrics-compare.py
    forget_daemon_state
}
trap cleanup EXIT

start_fresh
engine=$(engine_cgroup)
echo "engine cgroup: $engine"
wait_for 10 connects 127.0.0.1 "$port"
check "the endpoint answers on 127.0.0.1:$port" connects 127.0.0.1 "$port"

echo "== a scrape against the kernel files"
check "every value lies between the kernel's reads before and after the scrape" \
    "$CCGROUPD_PYTHON" /run/metrics-compare.py "$engine" "http://127.0.0.1:$port/metrics"
check "cpu.max '$(cat "$engine/cpu.max")' is 1.5 CPUs" test "$(cat "$engine/cpu.max")" = "150000 100000"
check "memory.max $(metric ccgroupd_memory_max_bytes) == kernel $(cat "$engine/memory.max")" \
    test "$(metric ccgroupd_memory_max_bytes)" = "$(cat "$engine/memory.max")"
check "pids.max $(metric ccgroupd_pids_max) == kernel $(cat "$engine/pids.max")" \
    test "$(metric ccgroupd_pids_max)" = "$(cat "$engine/pids.max")"
check "the daemon's own RSS is exported ($(metric process_resident_memory_bytes) bytes)" \
    test "$(metric process_resident_memory_bytes)" -gt 0
check "PSI as node_exporter names it: memory waiting (some) and stalled (full) both exported" \
    test "$(metric ccgroupd_pressure_waiting_seconds_total resource=memory)" -ge \
    "$(metric ccgroupd_pressure_stalled_seconds_total resource=memory)"
check "ccgroupd_engine_state{state=\"running\"} is 1" \
    test "$(metric ccgroupd_engine_state state=running)" -eq 1

echo "== an OOM kill in the engine group"
kernel_before=$(awk '$1 == "oom_kill" {print $2}' "$engine/memory.events")
metric_before=$(metric ccgroupd_memory_events_total event=oom_kill)
# A hog that joins the engine group and asks for more than memory.max (no swap allowed).
"$CCGROUPD_PYTHON" -c "
with open('$engine/cgroup.procs', 'w') as procs:
    procs.write('0')
hog = bytearray(400 << 20)
for offset in range(0, len(hog), 4096):
    hog[offset] = 1
" 2>/dev/null
echo "  hog exit status: $? (137: SIGKILL)"
kernel_after=$(awk '$1 == "oom_kill" {print $2}' "$engine/memory.events")
metric_after=$(metric ccgroupd_memory_events_total event=oom_kill)
echo "  memory.events oom_kill $kernel_before -> $kernel_after; metric $metric_before -> $metric_after"
check "the kernel counted an OOM kill" test "$kernel_after" -gt "$kernel_before"
check "the counter rose by exactly the kernel's delta ($((kernel_after - kernel_before)))" \
    test $((metric_after - metric_before)) -eq $((kernel_after - kernel_before))
check "the engine survived (only the hog was killed)" \
    test "$(ccgroupctl status --json | jq -r .engine.state)" = running

echo "== not reachable from a non-loopback address"
ip link add dummy0 type dummy
ip link set dummy0 up
ip addr add "$dummy_address/24" dev dummy0
# A positive control: a listener on that address is reachable, so a refusal means something.
"$CCGROUPD_PYTHON" -c 'import socket, sys, time
s = socket.create_server((sys.argv[1], 9999)); time.sleep(30)' "$dummy_address" &
listener=$!
wait_for 5 connects "$dummy_address" 9999
check "control: a listener on $dummy_address:9999 is reachable" connects "$dummy_address" 9999
check "the metrics endpoint is not reachable on $dummy_address:$port" \
    refused "$dummy_address" "$port"
echo "  listening sockets on :$port: $(ss -Hltn "sport = :$port" | awk '{print $4}' | tr '\n' ' ')"
check "ccgroupd listens on 127.0.0.1:$port only" \
    test "$(ss -Hltn "sport = :$port" | awk '{print $4}')" = "127.0.0.1:$port"

finish
