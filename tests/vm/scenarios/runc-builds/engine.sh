#!/bin/bash
# A stand-in Dagger engine whose builds are run by the real runc, as BuildKit's runc
# executor runs them (not a scenario: run by ccgroupd as [engine] command, mode = "exec",
# private_cgroup_namespace = true).
#
# Usage: engine.sh DIR
#
# Like the Dagger entrypoint it moves every process of its cgroup namespace's root into
# /init and enables every controller in the root's cgroup.subtree_control; then it makes
# /buildkit and serves requests, one line each, from the FIFO DIR/requests:
#   build ID BUNDLE   `runc --root DIR/runc run --bundle BUNDLE ID` (no --keep): runc
#                     creates /buildkit/ID (the bundle's linux.cgroupsPath) in this
#                     namespace, i.e. <engine group>/buildkit/ID on the host, and removes
#                     it the moment the build exits. Output in DIR/builds/ID.out, runc's
#                     exit code in DIR/builds/ID.rc once it is done.
#   hold MIB          a python3 of this engine (in /init) that keeps MIB MiB resident, so
#                     that the engine's own RSS is larger than a build's; its pid in
#                     DIR/holder.pid once the memory is touched.
# The builds' root file system is DIR/rootfs: the guest's / bound there (in the engine's own
# mount namespace). DIR/engine.pid holds this script's pid once /buildkit exists. On SIGTERM it kills every
# running container (runc kill KILL), waits for the runc processes and exits 0.
set -u
dir=$1
cg=/sys/fs/cgroup
runc_root=$dir/runc
mkdir -p "$dir/builds" "$runc_root"

# dagger-entrypoint.sh, on cgroup v2.
mkdir -p "$cg/init"
xargs -rn1 <"$cg/cgroup.procs" >"$cg/init/cgroup.procs" 2>/dev/null || :
sed -e 's/ / +/g' -e 's/^/+/' <"$cg/cgroup.controllers" >"$cg/cgroup.subtree_control"
mkdir -p "$cg/buildkit"
# The builds' root: the guest's own / (runc cannot pivot_root to the mount it runs on), bound
# in this engine's private mount namespace only. The bundles make it read-only.
mkdir -p "$dir/rootfs"
mount --rbind / "$dir/rootfs"

stopping=false
stop() {
    stopping=true
    local id
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
        runc --root "$runc_root" kill "$id" KILL 2>/dev/null
    done
    [[ ! -s $dir/holder.pid ]] || kill "$(cat "$dir/holder.pid")" 2>/dev/null
    wait
    exit 0
}
trap stop TERM INT

run_build() {  # run_build ID BUNDLE: in the background, as BuildKit's executor does
    local id=$1 bundle=$2
    (
        runc --root "$runc_root" run --bundle "$bundle" "$id" </dev/null >"$dir/builds/$id.out" 2>&1
        echo $? >"$dir/builds/$id.rc.tmp"
        mv "$dir/builds/$id.rc.tmp" "$dir/builds/$id.rc"
    ) &
}

hold() {  # hold MIB
    python3 -c '
import os, sys, time
held = b"\1" * (int(sys.argv[1]) << 20)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    time.sleep(3600)' "$1" "$dir/holder.pid" &
}

[[ -p $dir/requests ]] || mkfifo "$dir/requests"
# Read-write, so that the FIFO never reports end-of-file between writers.
exec 3<>"$dir/requests"
echo $$ >"$dir/engine.pid"
while ! $stopping; do
    # No -t: a read that times out between two bytes of a line loses the bytes it read.
    # A trapped SIGTERM interrupts the read and runs stop.
    if read -r verb a b <&3; then
        case $verb in
            build) run_build "$a" "$b" ;;
            hold) hold "$a" ;;
            *) echo "engine.sh: unknown request: $verb $a $b" >&2 ;;
        esac
    fi
done
