#!/bin/bash
# The guest is what the other scenarios assume: a unified cgroup v2 tree with the
# controllers ccgroupd needs, a booted systemd as PID 1, and ccgroupd installed the way
# tests/vm/run-in-vm promises (with its dependencies, unit file and configuration).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


fs_type=$(stat -fc %T /sys/fs/cgroup)
check "/sys/fs/cgroup is cgroup2 (got $fs_type)" test "$fs_type" = cgroup2fs

controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
for controller in cpu memory pids; do
    check "root cgroup.controllers has $controller ($controllers)" \
        grep -qw "$controller" <<<"$controllers"
done

pid1=$(cat /proc/1/comm)
check "PID 1 is systemd (got $pid1)" test "$pid1" = systemd
state=$(systemctl is-system-running || true)
check "the boot has finished with no failed unit (got $state)" test "$state" = running

version=$(ccgroupd --version)
check "ccgroupd --version works (got $version)" grep -q '^ccgroupd [0-9]' <<<"$version"
check "/usr/bin/ccgroupd runs the venv's python" \
    grep -q "^#!$CCGROUPD_PYTHON" "$(readlink -f /usr/bin/ccgroupd)"

check "ccgroupd's dependencies import in the venv" \
    "$CCGROUPD_PYTHON" -c 'import pydantic_settings, structlog, systemd.journal, prometheus_client'

check "ccgroupd.service is installed" test "$(systemctl show -P LoadState ccgroupd.service)" = loaded
check "ccgroupd.service is not started" \
    test "$(systemctl show -P ActiveState ccgroupd.service)" = inactive
check "/etc/ccgroupd/config.toml is in place" test -s /etc/ccgroupd/config.toml
finish
