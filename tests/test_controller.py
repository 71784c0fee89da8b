"""The limit controller's guards and audit records."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from ccgroupd.daemon.api import Peer
from ccgroupd.daemon.controller import log_limits_changed, refuse_memory_below_usage
from ccgroupd.errors import LimitsError
from ccgroupd.limits.model import Limits

MiB = 1024**2
CONFIG = Limits.from_mapping({"cpus": 4, "memory": "8G", "pids": 1000})
ENGINE = "/sys/fs/cgroup/system.slice/ccgroupd.service/engine"


def test_memory_at_or_below_usage_is_refused_with_the_usage() -> None:
    new = CONFIG.with_changes({"memory": "512M"})
    with pytest.raises(LimitsError) as refused:
        refuse_memory_below_usage(CONFIG, new, read_usage_bytes=lambda: 700 * MiB, cgroup=ENGINE,
                                  force=False)
    assert str(refused.value) == (
        f"memory = '512 MiB': at or below current usage 700 MiB of {ENGINE}; "
        "the kernel would OOM-kill the engine instead of failing; use --force")
    assert refused.value.exit_code == 3


@pytest.mark.parametrize(("new_memory", "usage_bytes", "force"), [
    ("512M", 700 * MiB, True),  # forced
    ("512M", 100 * MiB, False),  # well above usage
    ("max", 700 * MiB, False),  # no limit
    ("8G", 9000 * MiB, False),  # unchanged: not this change's doing
    ("512M", None, False),  # usage unknown (no memory controller yet)
])
def test_memory_guard_lets_safe_or_forced_changes_through(new_memory: str,
                                                          usage_bytes: int | None,
                                                          force: bool) -> None:
    refuse_memory_below_usage(CONFIG, CONFIG.with_changes({"memory": new_memory}),
                              read_usage_bytes=lambda: usage_bytes, cgroup=ENGINE, force=force)


@pytest.mark.parametrize(("changes", "force"), [
    ({"cpus": 1}, False),  # memory unchanged
    ({"memory": "max"}, False),
    ({"memory": "512M"}, True),
])
def test_memory_guard_reads_usage_only_for_a_new_memory_limit(changes: dict[str, object],
                                                              force: bool) -> None:
    def unread() -> int:
        raise AssertionError("memory.current read for a change that cannot OOM-kill")

    refuse_memory_below_usage(CONFIG, CONFIG.with_changes(changes), read_usage_bytes=unread,
                              cgroup=ENGINE, force=force)


def test_memory_equal_to_usage_is_refused() -> None:
    with pytest.raises(LimitsError):
        refuse_memory_below_usage(CONFIG, CONFIG.with_changes({"memory": "512M"}),
                                  read_usage_bytes=lambda: 512 * MiB, cgroup=ENGINE,
                                  force=False)


def test_limits_changed_names_who_and_only_what_changed() -> None:
    new = CONFIG.with_changes({"cpus": 2, "memory": "512M", "cpu_weight": 50})
    with capture_logs() as logs:
        log_limits_changed(CONFIG, new, cgroup=ENGINE, peer=Peer(pid=77, uid=0, gid=0),
                           scope="persistent")
        log_limits_changed(new, new, cgroup=ENGINE, peer=None, scope="reload")
    assert logs == [{
        "event": "limits_changed", "log_level": "info", "cgroup": ENGINE, "scope": "persistent",
        "uid": 0, "pid": 77,
        "old": "cpus=4, memory=8 GiB, cpu_weight=default",
        "new": "cpus=2, memory=512 MiB, cpu_weight=50",
    }]
