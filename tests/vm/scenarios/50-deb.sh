#!/bin/bash
# vm-timeout-s: 900
# The Debian package on a host without network: install, run, upgrade, remove, purge.
#
# Needs the package built on the host by packaging/build-deb, in $CCGROUPD_DEBS
# (tests/vm/test_vm.py builds it and ships it with CCGROUPD_VM_DEBS; by hand:
# packaging/run-in-guest dist/ccgroupd_*.deb tests/vm/scenarios/50-deb.sh). The upgrade
# goes to a rebuild of the same package with a higher version and a changed default
# config, made here with dpkg-deb.
#
# The test guest comes with a development install of ccgroupd (a venv, symlinks
# /usr/bin/ccgroupd and /usr/bin/ccgroupctl, /etc/systemd/system/ccgroupd.service,
# /etc/ccgroupd/config.toml). The unit and the config are removed first: the unit in
# /etc would shadow the package's, and the config would not be the package's
# conffile. The /usr/bin symlinks are left: dpkg replaces files no package owns,
# which is checked. On exit the development install is put back for later scenarios.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

debs=${CCGROUPD_DEBS:-$CCGROUPD_SCENARIOS/../debs}
deb=$(find "$debs" -maxdepth 1 -name 'ccgroupd_*_amd64.deb' 2>/dev/null | sort -V | tail -n 1)
if [[ -z $deb ]]; then
    echo "FAILED: no ccgroupd_*_amd64.deb in $debs: build it with packaging/build-deb and run"
    echo "        this scenario through packaging/run-in-guest"
    exit 1
fi

# A step the rest depends on: stop at once if it fails.
must() {
    local what=$1
    shift
    echo "--- $what"
    if ! "$@"; then
        echo "FAILED: $what"
        exit 1
    fi
}
# For check: the command's own output would drown the ok/FAILED lines.
quietly() { "$@" >/dev/null; }
property() { systemctl show -P "$1" ccgroupd.service; }
owned_by_package() { [[ $(dpkg-query -S "$1" 2>/dev/null) == "ccgroupd: $1" ]]; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# man justifies its lines (extra blanks): compare with the blanks squeezed.
man_shows() {
    local text
    text=$(MANPAGER=cat MANWIDTH=200 man "$1" "$2" 2>&1 | tr -s ' ')
    [[ $text == *"$3"* ]]
}
tree_sha() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0r sha256sum); }
snapshot() {
    # Every path on the root file system, but what changes on its own or by design
    # (dpkg's database and logs, man-db's index, journald, the backup copies of the
    # user and group files that addgroup/delgroup/useradd write, apt's own state).
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /var/log -o -path /var/lib/dpkg -o -path /var/lib/apt \
        -o -path /var/cache \
        -o -path /root -o -path /mnt \) -prune -o -print | grep -v -x -e /etc/ld.so.cache \
        -e '/etc/\(passwd\|shadow\|group\|gshadow\|subuid\|subgid\)-' \
        -e /var/lib/systemd/catalog/database | sort
}

echo "--- the guest has no network"
check "no default route" test -z "$(ip route show default)"
check "no ccgroupd package installed yet" test -z "$(dpkg-query -W -f='${Status}' ccgroupd 2>/dev/null | grep ' installed')"

echo "--- remove the harness's development install of ccgroupd"
# Kept aside and put back on exit, so that later scenarios find the guest as the
# harness left it (purge removes /usr/bin/ccgroupd{,ctl}, which dpkg took over).
dev_install=$(mktemp -d)
mkdir "$dev_install/etc" "$dev_install/bin"
cp -a /etc/systemd/system/ccgroupd.service /etc/ccgroupd "$dev_install/etc/"
cp -P /usr/bin/ccgroupd /usr/bin/ccgroupctl "$dev_install/bin/"
# shellcheck disable=SC2329  # invoked by the EXIT trap
restore_dev_install() {
    if [[ -n ${groups_before:-} ]] && ! grep -q -x ccgroupd <<<"$groups_before"; then
        groupdel ccgroupd 2>/dev/null || true
    fi
    cp -a "$dev_install/etc/ccgroupd.service" /etc/systemd/system/
    rm -rf /etc/ccgroupd
    cp -a "$dev_install/etc/ccgroupd" /etc/
    cp -P "$dev_install"/bin/* /usr/bin/
    systemctl daemon-reload
    rm -rf "$dev_install" /usr/local/sbin/stand-in-engine
}
trap restore_dev_install EXIT
rm -f /etc/systemd/system/ccgroupd.service
rm -rf /etc/ccgroupd
systemctl daemon-reload
check "/usr/bin/ccgroupd is the harness's unowned symlink" test -L /usr/bin/ccgroupd

# A stand-in for the Dagger engine: waits until SIGTERM.
engine=/usr/local/sbin/stand-in-engine
cat >"$engine" <<'EOF'
#!/bin/sh
trap 'kill "$sleeper" 2>/dev/null; echo "stand-in engine: stopping"; exit 0' TERM
echo "stand-in engine: running as pid $$"
sleep infinity &
sleeper=$!
wait "$sleeper"
EOF
chmod 0755 "$engine"
groups_before=$(getent group | cut -d: -f1 | sort)
users_before=$(getent passwd | cut -d: -f1 | sort)
paths_before=$(mktemp)
# Without the harness's symlinks: dpkg replaces them (checked below), so they are gone
# after the purge, as they should be.
snapshot | grep -v -x -e /usr/bin/ccgroupd -e /usr/bin/ccgroupctl >"$paths_before"

must "install $(basename "$deb") with dpkg -i (offline, only Debian's packages)" dpkg -i "$deb"
version=$(dpkg-query -W -f='${Version}' ccgroupd)
check "package is installed ($version)" \
    test "$(dpkg-query -W -f='${Status}' ccgroupd)" = "install ok installed"
check "/usr/bin/ccgroupd is now the package's file, not the symlink" \
    bash -c '[[ -f /usr/bin/ccgroupd && ! -L /usr/bin/ccgroupd ]]'
check "dpkg owns /usr/bin/ccgroupd and /usr/bin/ccgroupctl" \
    bash -c "$(declare -f owned_by_package); owned_by_package /usr/bin/ccgroupd && owned_by_package /usr/bin/ccgroupctl"
ccgroupd_version=$(ccgroupd --version)
check "ccgroupd --version works ($ccgroupd_version)" grep -q '^ccgroupd [0-9]' <<<"$ccgroupd_version"
check "ccgroupctl --help works" bash -c 'ccgroupctl --help | grep -q "restart-engine"'
check "man ccgroupctl works" man_shows 1 ccgroupctl "change and inspect the limits"
check "man 8 ccgroupd works" man_shows 8 ccgroupd "keep the Dagger engine"
check "pydantic 2 and pydantic-core load from /usr/lib/ccgroupd" \
    /usr/bin/python3 -I -S -c 'import sys; sys.path += ["/usr/lib/ccgroupd", "/usr/lib/python3/dist-packages"]
import pydantic, pydantic_core, pydantic_settings, structlog, systemd.journal, prometheus_client
assert pydantic.VERSION.startswith("2."), pydantic.VERSION
assert pydantic_core.__file__.startswith("/usr/lib/ccgroupd/"), pydantic_core.__file__'
check "postinst byte-compiled the vendored libraries" test -d /usr/lib/ccgroupd/pydantic/__pycache__
# Debian 12 is merged-/usr: systemd may name it by its /lib alias.
check "unit is known to systemd, from the package ($(property FragmentPath))" \
    test "$(readlink -f "$(property FragmentPath)")" = /usr/lib/systemd/system/ccgroupd.service
check "unit is enabled ($(systemctl is-enabled ccgroupd || true))" systemctl -q is-enabled ccgroupd
check "unit was not started on install ($(property ActiveState))" test "$(property ActiveState)" = inactive
check "group ccgroupd exists" quietly getent group ccgroupd
check "/etc/ccgroupd/config.toml is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' ccgroupd | grep -q '^ /etc/ccgroupd/config.toml '"
check "journald knows ccgroupd's catalog" bash -c 'journalctl --dump-catalog | grep -q "Defined-By: ccgroupd"'
check "the installed config.toml sets nothing" \
    test -z "$(grep -v -e '^#' -e '^\[' -e '^$' /etc/ccgroupd/config.toml)"

echo "--- configure the stand-in engine in a drop-in, and start the service"
mkdir -p /etc/ccgroupd/config.d
cat >/etc/ccgroupd/config.d/50-local.toml <<EOF
[limits]
cpus = 1
memory = "512M"
[engine]
command = ["$engine"]
stop_grace_s = 10.0
EOF
# An administrator who edited the packaged file as well: the upgrade below must keep it.
sed -i 's/^# report_interval_s = 10.0$/report_interval_s = 5.0/' /etc/ccgroupd/config.toml
check "the edit took" grep -q -x 'report_interval_s = 5.0' /etc/ccgroupd/config.toml
config_sha=$(sha /etc/ccgroupd/config.toml)
drop_in_sha=$(sha /etc/ccgroupd/config.d/50-local.toml)
check "ccgroupd check accepts the host and the config" ccgroupd check
checked=$(ccgroupd check)
check "ccgroupd check names the file of each value" \
    grep -q -F -e "limits.cpus from /etc/ccgroupd/config.d/50-local.toml" <<<"$checked"
check "... the packaged file's edit too" \
    grep -q -F -e "monitor.report_interval_s from /etc/ccgroupd/config.toml" <<<"$checked"
candidate=$(mktemp --suffix=.toml)
cp /etc/ccgroupd/config.d/50-local.toml "$candidate"
echo 'memory_high = "1G"' >>"$candidate" # in [engine]: an unknown key there
ccgroupd --config "$candidate" check --config-only >/dev/null && code=0 || code=$?
check "check --config-only refuses an invalid candidate (exit $code)" test "$code" = 3
check "check --config-only accepts a valid one" \
    quietly ccgroupd --config /etc/ccgroupd/config.d/50-local.toml check --config-only
rm -f "$candidate"
must "systemctl start ccgroupd" systemctl start ccgroupd
check "ccgroupd is active" systemctl -q is-active ccgroupd
must "ccgroupctl set --memory 300M (persisted)" quietly ccgroupctl set --memory 300M
status=$(ccgroupctl status --json)
check "status: memory 300M from a persisted change" quietly \
    jq -e '.limits.memory.value == 314572800 and .limits.memory.source == "persisted"' \
    <<<"$status"
check "/var/lib/ccgroupd holds the persisted change" test -n "$(find /var/lib/ccgroupd -type f)"
useradd --no-create-home --groups ccgroupd ccgroupd-viewer
check "a member of group ccgroupd may read the status" \
    quietly runuser -u ccgroupd-viewer -- ccgroupctl status --json
runuser -u ccgroupd-viewer -- ccgroupctl set --cpus 0.5 2>/dev/null && code=0 || code=$?
check "... but not change limits (exit $code, 4 = permission denied)" test "$code" = 4
userdel ccgroupd-viewer
state_before=$(tree_sha /var/lib/ccgroupd)
pid_before=$(property MainPID)

echo "--- upgrade to a rebuild with a higher version and a new default config"
rebuild=$(mktemp -d)
dpkg-deb -R "$deb" "$rebuild/root"
new_version="$version+rebuild1"
sed -i "s/^Version: .*/Version: $new_version/" "$rebuild/root/DEBIAN/control"
echo "# a new default in the new version" >>"$rebuild/root/etc/ccgroupd/config.toml"
(cd "$rebuild/root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Znone -b "$rebuild/root" "$rebuild/ccgroupd_${new_version}_amd64.deb" >/dev/null
# --force-confold: keep the administrator's config without asking, as unattended
# upgrades are run (apt-get -o Dpkg::Options::=--force-confold).
must "dpkg -i --force-confold the rebuild ($new_version)" \
    dpkg -i --force-confdef --force-confold "$rebuild/ccgroupd_${new_version}_amd64.deb"
check "version is now $new_version" test "$(dpkg-query -W -f='${Version}' ccgroupd)" = "$new_version"
check "edited /etc/ccgroupd/config.toml kept" test "$(sha /etc/ccgroupd/config.toml)" = "$config_sha"
check "new default config beside it as config.toml.dpkg-dist" test -f /etc/ccgroupd/config.toml.dpkg-dist
check "the drop-in is untouched" test "$(sha /etc/ccgroupd/config.d/50-local.toml)" = "$drop_in_sha"
check "ccgroupd is active after the upgrade" systemctl -q is-active ccgroupd
check "the upgrade restarted ccgroupd (main pid $pid_before -> $(property MainPID))" \
    test "$(property MainPID)" != "$pid_before"
check "/var/lib/ccgroupd unchanged" test "$(tree_sha /var/lib/ccgroupd)" = "$state_before"
status=$(ccgroupctl status --json)
check "persisted memory 300M still in force after the restart" quietly \
    jq -e '.limits.memory.value == 314572800 and .limits.memory.source == "persisted"' \
    <<<"$status"
check "the drop-in's cpus 1 still in force after the restart" quietly \
    jq -e '.limits.cpus.value == 1 and .limits.cpus.source == "config"' <<<"$status"
check "cpu.max holds it" \
    test "$(cat /sys/fs/cgroup/system.slice/ccgroupd.service/dagger-engine/cpu.max)" = "100000 100000"
rm -rf "$rebuild"

echo "--- a remove that dpkg aborts after prerm: postinst abort-remove starts the service again"
# As dpkg runs them: deb-systemd-helper does nothing unless called from a maintainer script.
must "prerm remove" env DPKG_MAINTSCRIPT_PACKAGE=ccgroupd DPKG_MAINTSCRIPT_NAME=prerm \
    /var/lib/dpkg/info/ccgroupd.prerm remove
check "prerm stopped the service" test "$(property ActiveState)" = inactive
must "postinst abort-remove" env DPKG_MAINTSCRIPT_PACKAGE=ccgroupd DPKG_MAINTSCRIPT_NAME=postinst \
    /var/lib/dpkg/info/ccgroupd.postinst abort-remove
check "ccgroupd is active again after abort-remove" systemctl -q is-active ccgroupd
/var/lib/dpkg/info/ccgroupd.postinst bogus 2>/dev/null && code=0 || code=$?
check "postinst refuses an unknown action (exit $code)" test "$code" = 1

echo "--- remove"
package_files=$(dpkg-query -L ccgroupd)
must "dpkg -r ccgroupd" dpkg -r ccgroupd
check "service stopped by prerm ($(property ActiveState))" test "$(property ActiveState)" = inactive
check "conffile kept on remove" test -f /etc/ccgroupd/config.toml
check "/usr/bin/ccgroupd gone" test ! -e /usr/bin/ccgroupd

echo "--- purge"
must "apt-get purge ccgroupd" apt-get purge -y -q -o Dpkg::Use-Pty=0 ccgroupd
check "dpkg no longer knows the package" bash -c '! dpkg-query -W ccgroupd 2>/dev/null'
leftovers=$(while read -r path; do
    # Directories other packages share (/usr/bin, /etc, ...) stay, as they should.
    if [[ -e $path && ! -d $path ]] || [[ -d $path && $path == *ccgroupd* ]]; then
        echo "$path"
    fi
done <<<"$package_files")
check "nothing of the package's $(wc -l <<<"$package_files") paths is left${leftovers:+: $leftovers}" \
    test -z "$leftovers"
for path in /etc/ccgroupd /var/lib/ccgroupd /usr/lib/ccgroupd \
    /run/ccgroupd /sys/fs/cgroup/system.slice/ccgroupd.service \
    /etc/systemd/system/multi-user.target.wants/ccgroupd.service \
    /var/lib/systemd/deb-systemd-helper-enabled/ccgroupd.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/ccgroupd.service; do
    check "$path is gone" test ! -e "$path"
done
# Debian keeps system groups on purge: memberships operators added survive a reinstall.
check "group ccgroupd is kept" quietly getent group ccgroupd
check "no group added or removed but ccgroupd" test "$(getent group | cut -d: -f1 | grep -v -x ccgroupd | sort)" = "$(grep -v -x ccgroupd <<<"$groups_before")"
check "no user added or removed" test "$(getent passwd | cut -d: -f1 | sort)" = "$users_before"
check "systemd no longer knows the unit ($(property LoadState))" test "$(property LoadState)" = not-found
check "journald's catalog no longer has ccgroupd" bash -c '! journalctl --dump-catalog | grep -q "Defined-By: ccgroupd"'
# systemd's helpers tidy up empty .wants directories (the image leaves
# timers.target.wants empty): not ccgroupd's to keep.
changed=$(diff "$paths_before" <(snapshot) | grep '^[<>]' |
    grep -v -x '< /etc/systemd/system/[^/]*\.wants' || true)
check "the file system has the same paths as before the install${changed:+:
$changed}" test -z "$changed"
rm -f "$paths_before" "$engine"

finish
