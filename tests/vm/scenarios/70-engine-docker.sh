#!/bin/bash
# vm-timeout-s: 600
# [engine] mode = "docker" with the stand-in engine (tests/vm/image/standin-engine.c) as an
# image made by `docker import`. The stand-in does on cgroup v2 what the Dagger engine's
# entrypoint does: moves itself to /init of its cgroup namespace, enables every controller
# and runs builds in /buildkit/<id>. Must show, with docker's cgroupfs driver: READY only
# once the engine's socket accepts; the docker client in <group>/launcher and the container
# with the engine and its builds in <group>/<container id>; a build's memory hog OOM-killed
# under the group's memory.max with ccgroupd's oom_kill naming the build's group; a
# CPU-bound build throttled by its cpu.max; `systemctl stop ccgroupd` delivers SIGTERM to
# the entrypoint and leaves no process and no container. With docker's systemd driver
# ccgroupd refuses to start (exit 6) and says what to change.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image=ccgroupd-standin:test
unit_cg=/sys/fs/cgroup/system.slice/ccgroupd.service
group=$unit_cg/dagger-engine
config=/etc/ccgroupd/config.toml
docker_host_save /run/dagger /var/lib/dagger

cleanup() {
    forget_daemon_state
    docker rm --force ccgroupd-engine >/dev/null 2>&1
    docker rmi "$image" >/dev/null 2>&1
    systemctl stop docker.socket docker.service containerd.service
    docker_host_restore
}
reset_unit
trap cleanup EXIT
mark_journal

write_config() {
    cat >"$config" <<EOF
[limits]
cpus = 0.5
memory = "200M"
memory_swap = 0
pids = 200

[engine]
mode = "docker"
image = "$image"
# After the image's entrypoint: the stand-in listens 3 s after it starts.
command = ["--ready-delay-s", "3"]
ready_socket = "$STANDIN_SOCKET"
ready_timeout_s = 90
stop_grace_s = 30

[monitor]
cpu_poll_interval_s = 1

[daemon]
log_format = "journal"
EOF
}

echo "--- docker with the cgroupfs driver"
mkdir -p /etc/docker
echo '{"exec-opts": ["native.cgroupdriver=cgroupfs"]}' >"$DOCKER_DAEMON_JSON"
docker_started_s=$SECONDS
check "docker starts" systemctl start docker
echo "dockerd and containerd started in $((SECONDS - docker_started_s)) s"
check "docker reports the cgroupfs driver on cgroup v2" \
    test "$(docker info --format '{{.CgroupDriver}} {{.CgroupVersion}}')" = "cgroupfs 2"
check "the stand-in image imports" docker import --change 'ENTRYPOINT ["/usr/local/bin/standin-engine"]' \
    "$STANDIN_DIR/rootfs.tar" "$image"

echo "--- start"
write_config
start_standin_engine

echo "--- where everything runs"
id=$(docker inspect --format '{{.Id}}' ccgroupd-engine)
echo "container $id: $(docker inspect --format 'cgroupns={{.HostConfig.CgroupnsMode}} parent={{.HostConfig.CgroupParent}} privileged={{.HostConfig.Privileged}}' ccgroupd-engine)"
subtree_procs "$group"
procs=$(subtree_procs "$group")
check "the docker client runs in <group>/launcher" grep -q '^/launcher [0-9]* docker$' <<<"$procs"
check "the engine moved itself to <group>/<container id>/init" \
    grep -q "^/$id/init [0-9]* standin-engine\$" <<<"$procs"
check "the engine's /buildkit is <group>/<container id>/buildkit" test -d "$group/$id/buildkit"

check_standin_builds "$group" "$id"

# Every stand-in process on the host (engine and builds) is inside the engine group.
outside=$(for pid in $(pgrep -x standin-engine); do
    grep -q "^0::${group#/sys/fs/cgroup}/" "/proc/$pid/cgroup" || echo "$pid $(cat "/proc/$pid/cgroup")"
done)
check "every engine and build process is under the engine group" test -z "$outside"
echo "$outside"
echo "subtree_control of / before: $root_controls_before; now: $(subtree_controllers /)"
echo "subtree_control of /system.slice before: $slice_controls_before; now: $(subtree_controllers /system.slice)"

echo "--- stop"
stop_standin_engine
check "no container left (docker ps -a)" wait_for 20 bash -c '[[ -z $(docker ps -aq) ]]'
docker ps -a
check "the engine group is gone" test ! -e "$group"

echo "--- docker with the systemd driver: refused"
echo '{}' >"$DOCKER_DAEMON_JSON"
check "docker restarts" systemctl restart docker
check "docker reports the systemd driver" \
    test "$(docker info --format '{{.CgroupDriver}}')" = systemd
reset_unit
check "systemctl start ccgroupd fails" bash -c '! systemctl start ccgroupd'
systemctl show ccgroupd -p Result -p ExecMainStatus -p ActiveState | tr "\n" " "; echo
journalctl -u ccgroupd --no-pager -o cat -n 5
check "ccgroupd exited 6 (unsupported host), which the unit does not restart" \
    test "$(systemctl show ccgroupd -p ExecMainStatus --value)" = 6
check "the message names daemon.json and the cgroupfs driver" bash -c \
    "journalctl -u ccgroupd --no-pager -o cat | grep -F 'native.cgroupdriver=cgroupfs' | grep -qF /etc/docker/daemon.json"
check "no container was made" test -z "$(docker ps -aq)"
check "no engine group was left" test ! -e "$group"

finish
