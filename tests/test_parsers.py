"""Table tests for ccgroupd.kernel.parsers: what the kernel prints, and what it never should."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ccgroupd.kernel.parsers import (
    CpuMax,
    CpuStat,
    Mount,
    ParseError,
    Psi,
    PsiLine,
    parse_controllers,
    parse_cpu_list_count,
    parse_cpu_max,
    parse_cpu_stat,
    parse_device,
    parse_flat_keyed,
    parse_io_max,
    parse_io_stat,
    parse_io_weight_default,
    parse_mounts,
    parse_pids,
    parse_proc_cgroup_v2,
    parse_psi,
    parse_uint_or_max,
)

HUGE = str(2**64 + 1)  # beyond any kernel counter; Python keeps it exact


@pytest.mark.parametrize(("text", "expected"), [
    ("max\n", None),
    ("0\n", 0),
    ("8589934592\n", 8589934592),
    ("  4096  ", 4096),
    (HUGE, 2**64 + 1),
])
def test_uint_or_max(text: str, expected: int | None) -> None:
    assert parse_uint_or_max(text) == expected


@pytest.mark.parametrize("text", [
    "", "\n", "-1", "MAX", "infinity", "8G", "1.5", "12 34", "0x10", "١٢٣", "+5",
])
def test_uint_or_max_refuses(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uint_or_max(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("max 100000\n", CpuMax(None, 100000)),
    ("400000 100000\n", CpuMax(400000, 100000)),
    ("1000 1000", CpuMax(1000, 1000)),
    (f"{HUGE} 100000", CpuMax(2**64 + 1, 100000)),
])
def test_cpu_max(text: str, expected: CpuMax) -> None:
    assert parse_cpu_max(text) == expected


@pytest.mark.parametrize("text", [
    "", "\n", "max", "100000", "max max", "100000 max", "-1 100000", "1.5 100000",
    "100000 100000 1", "garbage here",
])
def test_cpu_max_refuses(text: str) -> None:
    with pytest.raises(ParseError, match=r"cpu\.max"):
        parse_cpu_max(text)


MEMORY_EVENTS = "low 0\nhigh 12\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("\n\n", {}),
    (MEMORY_EVENTS, {"low": 0, "high": 12, "max": 3, "oom": 1, "oom_kill": 2,
                     "oom_group_kill": 0}),
    ("populated 1\nfrozen 0\n", {"populated": 1, "frozen": 0}),
    ("max 0", {"max": 0}),  # pids.events, no trailing newline
    ("high 0\nmax 0\nfail 7\n", {"high": 0, "max": 0, "fail": 7}),  # memory.swap.events
    (f"oom_kill {HUGE}\n", {"oom_kill": 2**64 + 1}),
    ("a   1\n\tb 2  \n", {"a": 1, "b": 2}),
])
def test_flat_keyed(text: str, expected: dict[str, int]) -> None:
    assert parse_flat_keyed(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("oom_kill\n", "expected 'key value'"),
    ("oom_kill 1 2\n", "expected 'key value'"),
    ("oom_kill -1\n", "non-negative integer"),
    ("oom_kill one\n", "non-negative integer"),
    ("oom_kill 1.0\n", "non-negative integer"),
    ("oom 1\noom 2\n", "duplicate key 'oom'"),
    ("\x00\x01 garbage\n", "non-negative integer"),
])
def test_flat_keyed_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_flat_keyed(text)


def test_flat_keyed_names_the_line() -> None:
    with pytest.raises(ParseError, match="line 3"):
        parse_flat_keyed("a 1\nb 2\nc\n")


CPU_STAT_ENABLED = (
    "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n"
    "nr_periods 10\nnr_throttled 4\nthrottled_usec 900\nnr_bursts 0\nburst_usec 0\n"
)


@pytest.mark.parametrize(("text", "expected"), [
    # Before the cpu controller is enabled only the three usage keys exist.
    ("usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n", CpuStat(5000, 3000, 2000)),
    (CPU_STAT_ENABLED, CpuStat(5000, 3000, 2000, nr_periods=10, nr_throttled=4,
                               throttled_usec=900)),
    ("usage_usec 1\nuser_usec 1\nsystem_usec 0\ncore_sched.force_idle_usec 0\n",
     CpuStat(1, 1, 0)),
])
def test_cpu_stat(text: str, expected: CpuStat) -> None:
    assert parse_cpu_stat(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "missing key 'usage_usec'"),
    ("usage_usec 1\nuser_usec 1\n", "missing key 'system_usec'"),
    ("usage_usec 1\nusage_usec 1\n", "duplicate key"),
    ("usage_usec x\n", "non-negative integer"),
])
def test_cpu_stat_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_cpu_stat(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
     Psi(PsiLine(0.0, 0.0, 0.0, 0), PsiLine(0.0, 0.0, 0.0, 0))),
    ("some avg10=12.50 avg60=3.01 avg300=0.99 total=123456789\n",
     Psi(PsiLine(12.5, 3.01, 0.99, 123456789), None)),
    (f"full avg10=100.00 avg60=100.00 avg300=100.00 total={HUGE}\n"
     "some avg10=1 avg60=2 avg300=3 total=4\n",
     Psi(PsiLine(1.0, 2.0, 3.0, 4), PsiLine(100.0, 100.0, 100.0, 2**64 + 1))),
])
def test_psi(text: str, expected: Psi) -> None:
    assert parse_psi(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "no 'some' line"),
    ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "no 'some' line"),
    ("some avg10=0.00 avg60=0.00 total=0\n", "missing 'avg300'"),
    ("some avg10=0.00 avg60=0.00 avg300=0.00\n", "missing 'total'"),
    ("some avg10=nan avg60=0.00 avg300=0.00 total=0\n", "bad average 'nan'"),
    ("some avg10=NaN avg60=0.00 avg300=0.00 total=0\n", "bad average 'NaN'"),
    ("some avg10=inf avg60=0.00 avg300=0.00 total=0\n", "bad average 'inf'"),
    ("some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n", "bad average '-1.00'"),
    ("some avg10=1_0 avg60=0.00 avg300=0.00 total=0\n", "bad average '1_0'"),
    ("some avg10=1e3 avg60=0.00 avg300=0.00 total=0\n", "bad average '1e3'"),
    ("some avg10=0.00 avg60=0.00 avg300=0.00 total=1.5\n", "non-negative integer"),
    ("some avg10 avg60=0.00 avg300=0.00 total=0\n", "expected key=value"),
    ("some avg10=1.00 avg10=2.00 avg60=0.00 avg300=0.00 total=0\n", "duplicate key 'avg10'"),
    ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
     "some avg10=9.00 avg60=0.00 avg300=0.00 total=0\n", "more than one 'some' line"),
    ("most avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "'some' or 'full'"),
])
def test_psi_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_psi(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("0::/\n", "/"),
    ("0::/system.slice/ccgroupd.service\n", "/system.slice/ccgroupd.service"),
    # Hybrid hosts list the v1 hierarchies first.
    ("9:name=systemd:/\n4:memory:/x\n0::/user.slice\n", "/user.slice"),
    ("0::/a:b/c\n", "/a:b/c"),
    ("0::/system.slice/gone.service (deleted)\n", "/system.slice/gone.service (deleted)"),
])
def test_proc_cgroup_v2(text: str, expected: str) -> None:
    assert parse_proc_cgroup_v2(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "no cgroup v2"),
    ("4:memory:/x\n1:cpu:/\n", "no cgroup v2"),
    ("0:cpu:/x\n", "no cgroup v2"),
    ("0::relative\n", "bad v2 path"),
    ("0::\n", "bad v2 path"),
    ("garbage", "no cgroup v2"),
])
def test_proc_cgroup_v2_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_proc_cgroup_v2(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", frozenset()),
    ("\n", frozenset()),
    ("cpuset cpu io memory hugetlb pids rdma misc\n",
     frozenset({"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"})),
    ("cpu cpu\n", frozenset({"cpu"})),
    ("net_cls", frozenset({"net_cls"})),
])
def test_controllers(text: str, expected: frozenset[str]) -> None:
    assert parse_controllers(text) == expected


@pytest.mark.parametrize("text", ["+cpu", "cpu,memory", "mémoire", "cpu -memory", "a/b"])
def test_controllers_refuses(text: str) -> None:
    with pytest.raises(ParseError, match="bad name"):
        parse_controllers(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("1\n", [1]),
    ("300\n12\n\n4194304\n", [300, 12, 4194304]),
])
def test_pids(text: str, expected: list[int]) -> None:
    assert parse_pids(text) == expected


@pytest.mark.parametrize("text", ["-1\n", "12 13\n", "abc\n", "1.0\n"])
def test_pids_refuses(text: str) -> None:
    with pytest.raises(ParseError, match="pid"):
        parse_pids(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n",
     [Mount("cgroup2", "/sys/fs/cgroup", "cgroup2",
            frozenset({"rw", "nosuid", "nodev", "noexec", "relatime", "nsdelegate"}))]),
    # Spaces, tabs and backslashes in paths arrive as octal escapes.
    ("tmpfs /mnt/a\\040b\\011c\\134d tmpfs rw 0 0\n",
     [Mount("tmpfs", "/mnt/a b\tc\\d", "tmpfs", frozenset({"rw"}))]),
    ("a /x ext4 ro\n\nb /y xfs rw 0 0\n",
     [Mount("a", "/x", "ext4", frozenset({"ro"})), Mount("b", "/y", "xfs", frozenset({"rw"}))]),
])
def test_mounts(text: str, expected: list[Mount]) -> None:
    assert parse_mounts(text) == expected


@pytest.mark.parametrize("text", ["cgroup2 /sys/fs/cgroup cgroup2\n", "garbage\n"])
def test_mounts_refuses(text: str) -> None:
    with pytest.raises(ParseError, match="mounts line 1"):
        parse_mounts(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("254:0\n", "254:0"),
    ("8:16", "8:16"),
    (" 259:03 ", "259:3"),  # the kernel never pads; a leading zero still means 3
])
def test_device(text: str, expected: str) -> None:
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["254", "254:", ":0", "a:b", "-1:0", "254:0:1", ""])
def test_device_refuses(text: str) -> None:
    with pytest.raises(ParseError):
        parse_device(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("254:0 rbps=max wbps=10485760 riops=max wiops=max\n",
     {"254:0": {"rbps": None, "wbps": 10485760, "riops": None, "wiops": None}}),
    ("8:0 rbps=2097152 wbps=max riops=max wiops=120\n"
     "254:0 rbps=max wbps=max riops=1000 wiops=max\n",
     {"8:0": {"rbps": 2097152, "wbps": None, "riops": None, "wiops": 120},
      "254:0": {"rbps": None, "wbps": None, "riops": 1000, "wiops": None}}),
])
def test_io_max(text: str, expected: dict[str, dict[str, int | None]]) -> None:
    assert parse_io_max(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("254:0 rbps=max wbps=max riops=max\n", "io.max 254:0: missing wiops"),
    ("254:0 rbps=1M wbps=max riops=max wiops=max\n", "io.max 254:0 rbps"),
    ("254:0 rbps wbps=max riops=max wiops=max\n", "line 1: expected key=value, got 'rbps'"),
    ("vda rbps=max wbps=max riops=max wiops=max\n", "line 1: expected a device number"),
    ("254:0 rbps=2 wbps=max riops=max wiops=max\n254:0 rbps=3 wbps=max riops=max wiops=max",
     "line 2: device 254:0 listed twice"),
    ("254:0 rbps=2 rbps=3 wbps=max riops=max wiops=max\n", "duplicate key 'rbps'"),
])
def test_io_max_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_io_max(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
     {"254:0": {"rbytes": 1, "wbytes": 2, "rios": 3, "wios": 4, "dbytes": 0, "dios": 0}}),
    ("254:0 \n", {"254:0": {}}),  # 6.1: a device that did no I/O yet
    # io.cost and io.latency append keys of their own, some not whole numbers.
    ("8:0 rbytes=5 wbytes=6 rios=1 wios=2 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=7 "
     "depth=max use_delay=-1\n",
     {"8:0": {"rbytes": 5, "wbytes": 6, "rios": 1, "wios": 2, "dbytes": 0, "dios": 0,
              "cost.usage": 7}}),
])
def test_io_stat(text: str, expected: dict[str, dict[str, int]]) -> None:
    assert parse_io_stat(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("254:0 rbytes=x wbytes=2\n", "io.stat 254:0 rbytes"),
    ("254:0 rbytes=1\n254:0 rbytes=2\n", "listed twice"),
    ("rbytes=1\n", "line 1: expected a device number"),
])
def test_io_stat_refuses(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_io_stat(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("0\n", 1), ("0-3\n", 4), ("0-3,8,10-11\n", 7), ("5-5\n", 1), ("", 0),
])
def test_cpu_list_count(text: str, expected: int) -> None:
    assert parse_cpu_list_count(text) == expected


@pytest.mark.parametrize("text", ["3-1\n", "a-b\n", "0-\n", "-1\n", "0 1\n"])
def test_cpu_list_count_refuses(text: str) -> None:
    with pytest.raises(ParseError, match="cpu list"):
        parse_cpu_list_count(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("default 100\n", 100), ("default 250\n8:16 50\n254:0 1000\n", 250),
])
def test_io_weight_default(text: str, expected: int) -> None:
    assert parse_io_weight_default(text) == expected


@pytest.mark.parametrize("text", ["", "8:16 50\n", "default\n", "default x\n"])
def test_io_weight_default_refuses(text: str) -> None:
    with pytest.raises(ParseError, match=r"io\.weight"):
        parse_io_weight_default(text)


@pytest.mark.parametrize("parser", [
    parse_uint_or_max, parse_cpu_max, parse_flat_keyed, parse_cpu_stat, parse_psi,
    parse_proc_cgroup_v2, parse_controllers, parse_pids, parse_mounts, parse_device,
    parse_io_max, parse_io_stat, parse_cpu_list_count, parse_io_weight_default,
])
def test_parse_errors_are_value_errors(parser: Any) -> None:
    # Callers catch ValueError-family errors only: no parser may leak IndexError or KeyError.
    for garbage in ["\x00", "::::", "= = =", "0::", "some =", "a b c d e f g h", "\ufffd"]:
        with contextlib.suppress(ParseError):
            parser(garbage)
