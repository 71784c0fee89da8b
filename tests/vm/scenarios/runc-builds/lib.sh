# Helpers for the scenarios whose builds the real runc creates and removes (sourced after
# ../lib.sh; not a scenario). The stand-in engine is engine.sh of this directory, run by
# ccgroupd in mode "exec" with a private cgroup namespace; builds run build.py.
# shellcheck shell=bash

# Where the engine's control files, runc's state and the bundles live; the engine and the
# builds (whose root is the guest's own /, read-only) see the same directory.
RB=/run/ccgroupd-runc-builds
RB_UNIT_CG=/sys/fs/cgroup/system.slice/ccgroupd.service
# shellcheck disable=SC2034  # used by the scenarios that source this file
RB_GROUP=$RB_UNIT_CG/dagger-engine

# rb_setup: copy the engine and build.py to $RB (a fresh one).
rb_setup() {
    rm -rf "$RB"
    mkdir -p "$RB/bundles"
    cp "$CCGROUPD_SCENARIOS/runc-builds/engine.sh" "$CCGROUPD_SCENARIOS/runc-builds/build.py" "$RB/"
    mkfifo "$RB/requests"
}

# rb_engine_toml: the [engine] table that runs the stand-in.
rb_engine_toml() {
    cat <<EOF
[engine]
mode = "exec"
private_cgroup_namespace = true
command = ["/bin/bash", "$RB/engine.sh", "$RB"]
restart = "on-failure"
restart_initial_delay_s = 0.5
stop_grace_s = 30
EOF
}

# rb_engine_pid: the stand-in's pid (a host pid), once it is serving requests.
rb_engine_pid() {
    cat "$RB/engine.pid" 2>/dev/null
}

# rb_engine_alive: the stand-in engine (its current pid) still runs.
rb_engine_alive() {
    local pid
    pid=$(rb_engine_pid) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# rb_request LINE: one request to the engine (fails after 10 s if nobody reads the FIFO).
rb_request() {
    timeout 10 bash -c 'echo "$1" >"$2"' _ "$1" "$RB/requests"
}

# rb_bundle ID ARG...: an OCI bundle at $RB/bundles/ID for a build running ARG... with the
# guest's / as its read-only root ($RB/rootfs, bound there by the engine) and
# linux.cgroupsPath /buildkit/ID (BuildKit's).
rb_bundle() {
    local id=$1 bundle=$RB/bundles/$1
    shift
    mkdir -p "$bundle"
    (cd "$bundle" && runc spec) || return 1
    jq --arg id "$id" --arg root "$RB/rootfs" --args '.root = {path: $root, readonly: true}
        | .process.args = $ARGS.positional | .process.terminal = false
        | .process.cwd = "/" | .hostname = $id
        | .linux.cgroupsPath = "/buildkit/\($id)"' "$@" \
        <"$bundle/config.json" >"$bundle/config.json.new" &&
        mv "$bundle/config.json.new" "$bundle/config.json"
}

# rb_build ID ARG...: make the bundle and ask the engine to run it.
rb_build() {
    rb_bundle "$@" && rb_request "build $1 $RB/bundles/$1"
}

# rb_done ID: the build's runc run has exited (its exit code is in $RB/builds/ID.rc).
rb_done() {
    [[ -f $RB/builds/$1.rc ]]
}

# rb_rc ID / rb_output ID: runc run's exit code, the build's output.
rb_rc() {
    cat "$RB/builds/$1.rc" 2>/dev/null
}
rb_output() {
    cat "$RB/builds/$1.out" 2>/dev/null
}

# rb_limit_seen ID KEY: the value of KEY (memory.max, pids.max, oom_score_adj, ...) that
# the build printed from its own /sys/fs/cgroup at its first instruction.
rb_limit_seen() {
    rb_output "$1" | sed -n 's/^limits //p' | head -1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# rb_build_pid ID: the pid of a process in the build's group (empty if none).
rb_build_pid() {
    head -1 "$RB_GROUP/buildkit/$1/cgroup.procs" 2>/dev/null
}

# rb_builds_json: the daemon's view of the running builds: `ccgroupctl top --once --json`
# where the client has it, else the control socket's "builds" operation (said on stderr).
rb_builds_json() {
    if ccgroupctl top --help >/dev/null 2>&1; then
        ccgroupctl top --once --json
        return
    fi
    echo "(ccgroupctl has no top yet: the socket's builds operation directly)" >&2
    "$CCGROUPD_PYTHON" -c '
import json, socket, sys
from ccgroupd import protocol
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(20)
    s.connect(protocol.DEFAULT_SOCKET_PATH)
    s.sendall(protocol.request(protocol.OP_BUILDS))
    reply = json.loads(s.makefile("rb").readline())
if not reply.get("ok"):
    sys.exit(f"builds: {reply}")
print(json.dumps(reply["result"]))'
}

# rb_teardown: stop the daemon (the engine kills its containers on SIGTERM) and remove
# every runc container, build group and file left behind.
rb_teardown() {
    local id
    systemctl stop ccgroupd 2>/dev/null
    for id in $(runc --root "$RB/runc" list -q 2>/dev/null); do
        runc --root "$RB/runc" delete --force "$id" 2>/dev/null
    done
    if [[ -d $RB_GROUP ]]; then
        find "$RB_GROUP" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$RB_GROUP" 2>/dev/null
    fi
    rm -rf "$RB"
}
