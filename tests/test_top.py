"""ccgroupctl top: CPU % from two samples, order, rows, and the terminal it borrows."""

from __future__ import annotations

import io
import os
import pty
import termios
from collections.abc import Iterator
from typing import Any

import pytest

from ccgroupd.client import top
from ccgroupd.client.ctl import Arguments
from ccgroupd.errors import EXIT_OK, EXIT_UNREACHABLE, CtlError

MiB = 1024**2
ENGINE = "/sys/fs/cgroup/system.slice/ccgroupd.service/dagger-engine"


def build(name: str, usage_usec: int | None, memory: int | None, **more: Any) -> dict[str, Any]:
    """One build as the daemon's builds operation describes it (the contract of issue 13)."""
    return {"id": name, "cgroup": f"container/buildkit/{name}", "command": f"run {name}",
            "age_s": 65.0, "usage_usec": usage_usec, "memory_current_bytes": memory,
            "memory_peak_bytes": memory, "pids_current": 3,
            "limits": {"cpus": 1.0, "memory": 256 * MiB, "memory_high": None,
                       "memory_swap": None, "pids": None, "cpu_weight": None}, **more}


def sample(read_at_s: float, engine_usec: int, *builds: dict[str, Any]) -> dict[str, Any]:
    return {"read_at_s": read_at_s,
            "engine": {"cgroup": ENGINE, "usage_usec": engine_usec,
                       "memory_current_bytes": 900 * MiB, "memory_peak_bytes": None,
                       "pids_current": 40, "limits": {"cpus": 4.0, "memory": 8192 * MiB}},
            "builds": list(builds)}


# -- CPU % -----------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "elapsed_s", "percent"), [
    ({"usage_usec": 1_000_000}, {"usage_usec": 4_000_000}, 2.0, 150.0),
    ({"usage_usec": 0}, {"usage_usec": 250_000}, 0.5, 50.0),
    ({"usage_usec": 7}, {"usage_usec": 7}, 1.0, 0.0),
    (None, {"usage_usec": 4_000_000}, 2.0, None),  # seen for the first time
    ({"usage_usec": 1}, {"usage_usec": None}, 1.0, None),  # unreadable: the group went away
    ({"usage_usec": None}, {"usage_usec": 5}, 1.0, None),
    ({"usage_usec": 9_000_000}, {"usage_usec": 1_000}, 1.0, None),  # a new group, same path
    ({"usage_usec": 1}, {"usage_usec": 2}, 0.0, None),  # the same reading twice
])
def test_cpu_percent_of_two_readings(before: dict[str, Any] | None, after: dict[str, Any],
                                     elapsed_s: float, percent: float | None) -> None:
    assert top.cpu_percent(before, after, elapsed_s) == percent


def test_builds_are_matched_by_group_not_by_place_or_id() -> None:
    previous = sample(100.0, 1_000_000, build("a", 0, MiB), build("b", 500_000, MiB))
    # b moved to the front, a new group reuses a's id elsewhere, c is new.
    current = sample(102.0, 5_000_000, build("b", 2_500_000, MiB),
                     build("a", 10, MiB, cgroup="other/buildkit/a"), build("c", 10**6, MiB))
    result = top.with_cpu_percent(previous, current)
    assert result["engine"]["cpu_percent"] == 200.0
    assert [(entry["cgroup"], entry["cpu_percent"]) for entry in result["builds"]] == [
        ("container/buildkit/b", 100.0), ("other/buildkit/a", None),
        ("container/buildkit/c", None)]
    assert result["read_at_s"] == 102.0
    assert "cpu_percent" not in current["engine"]  # the sample itself is left as it was


def test_the_first_sample_has_no_cpu_percent() -> None:
    result = top.with_cpu_percent(None, sample(5.0, 10, build("a", 10, MiB)))
    assert result["engine"]["cpu_percent"] is None
    assert result["builds"][0]["cpu_percent"] is None


# -- order and rows --------------------------------------------------------------------


BUILDS = [
    {"id": "idle", "cpu_percent": 0.0, "memory_current_bytes": 900 * MiB},
    {"id": "new", "cpu_percent": None, "memory_current_bytes": 50 * MiB},
    {"id": "busy", "cpu_percent": 180.0, "memory_current_bytes": 10 * MiB},
    {"id": "gone", "cpu_percent": None, "memory_current_bytes": None},
    {"id": "also-idle", "cpu_percent": 0.0, "memory_current_bytes": 900 * MiB},
    {"id": "half", "cpu_percent": 50.0, "memory_current_bytes": 50 * MiB},
]


@pytest.mark.parametrize(("key", "order"), [
    ("cpu", ["busy", "half", "also-idle", "idle", "new", "gone"]),
    ("memory", ["also-idle", "idle", "half", "new", "busy", "gone"]),
])
def test_builds_sort_largest_first_unknown_last(key: str, order: list[str]) -> None:
    assert [entry["id"] for entry in top.sorted_builds(BUILDS, key)] == order


def test_rows_of_the_engine_and_a_build() -> None:
    after = sample(102.0, 5_000_000, build("d2a8f9c1b7e64a0f9e3c5b1a2", 2_000_000, 212 * MiB,
                                           command="python3  hog.py\n400"))
    result = top.with_cpu_percent(sample(100.0, 1_000_000, build("d2a8f9c1b7e64a0f9e3c5b1a2",
                                                                   0, MiB)), after)
    assert top.row_cells(result["engine"], engine=True) == (
        "engine", "200.0", "900 MiB", "-", "40", "-", "4", "8 GiB", top.ENGINE_COMMAND)
    assert top.row_cells(result["builds"][0]) == (
        "d2a8f9c1b7e6", "100.0", "212 MiB", "212 MiB", "3", "1m 5s", "1", "256 MiB",
        "python3 hog.py 400")


def test_a_build_without_command_or_readings_yet() -> None:
    cells = top.row_cells({"id": "x", "command": None, "limits": {}, "cpu_percent": None})
    assert cells == ("x", "-", "-", "-", "-", "-", "max", "max", "(starting)")


def test_table_keeps_the_engine_first_and_aligns_the_columns() -> None:
    current = top.with_cpu_percent(
        sample(0.0, 0, build("small", 0, MiB), build("big", 0, MiB)),
        sample(1.0, 100_000, build("small", 1_000, 5 * MiB), build("big", 50_000, 3 * MiB)))
    lines = top.table(current, "memory")
    assert lines[0].split() == ["ID", "CPU", "%", "MEM", "PEAK", "PIDS", "AGE", "CPUS", "MEM",
                                "MAX", "COMMAND"]
    assert [line.split()[0] for line in lines[1:]] == ["engine", "small", "big"]
    assert [line.split()[0] for line in top.table(current, "cpu")[1:]] == [
        "engine", "big", "small"]
    # Right-aligned numbers: each column ends where its header does.
    end = lines[0].index("MEM MAX") + len("MEM MAX")
    assert {line[end - len("256 MiB"):end] for line in lines[2:]} == {"256 MiB"}
    assert lines[1][:end].endswith("8 GiB")


@pytest.mark.parametrize("width", [30, 60, 80, 200])
def test_table_fits_the_terminal_by_cutting_commands(width: int) -> None:
    long_command = "java -jar " + "/very/long/class/path.jar:" * 20
    current = sample(1.0, 0, build("a", 0, MiB, command=long_command))
    lines = top.table(current, "cpu", width)
    assert all(len(line) <= width for line in lines)
    assert lines[2].endswith(top.ELLIPSIS)
    assert top.table(current, "cpu")[2].endswith(long_command)  # no terminal: whole


@pytest.mark.parametrize(("line", "width", "shown"), [
    ("abcdef", 6, "abcdef"), ("abcdefg", 6, "abc..."), ("abcdefg", 3, "abc"),
    ("abcdefg", None, "abcdefg"),
])
def test_fit(line: str, width: int | None, shown: str) -> None:
    assert top.fit(line, width) == shown


@pytest.mark.parametrize(("pressed", "key", "after"), [
    ("c", "memory", "cpu"), ("m", "cpu", "memory"), ("x", "memory", "memory"),
    ("q", "cpu", None),
    ("Q", "memory", "memory"), ("M", "cpu", "cpu"),  # F2 is ESC O Q, Home ESC [ H, ...
])
def test_keys(pressed: str, key: str, after: str | None) -> None:
    assert top.next_sort(pressed, key) == after


def test_a_frame_is_cut_to_the_terminals_height_and_width() -> None:
    current = sample(1.0, 0, *(build(f"b{n}", 0, MiB) for n in range(30)))
    text = top.frame(current, "cpu", 2.0, os.terminal_size((60, 10)))
    assert text.startswith(top.HOME)
    assert text.endswith(top.CLEAR_BELOW)
    lines = text[len(top.HOME):-len(top.CLEAR_BELOW)].split("\n")
    assert len(lines) == 10
    assert all(line.endswith(top.CLEAR_LINE) and len(line) - len(top.CLEAR_LINE) <= 60
               for line in lines)
    assert lines[0].startswith("ccgroupctl top: 30 builds running, by CPU, every 2 s")


def test_the_engines_name_is_in_the_title_and_its_row() -> None:
    current = top.with_cpu_percent(None, sample(1.0, 0, build("a", 0, MiB)))
    assert top.title(current, "cpu", 1.0).startswith("ccgroupctl top: 1 build running")
    assert top.title(current, "cpu", 1.0, "ci").startswith(
        "ccgroupctl top: engine ci, 1 build running, by CPU")
    assert top.table(current, "cpu")[1].endswith(top.ENGINE_COMMAND)
    assert top.table(current, "cpu", asked="ci")[1].endswith(
        "(engine ci's group, its builds included)")
    # A daemon that names the engine it answered for (one engine, no --engine) is believed.
    named = {**current, "name": "web"}
    assert top.title(named, "cpu", 1.0).startswith("ccgroupctl top: engine web, 1 build")
    assert top.table(named, "cpu", asked="web")[1].endswith("(engine web's group, its builds "
                                                            "included)")
    text = top.frame(current, "memory", 2.0, os.terminal_size((100, 10)), "ci")
    assert text.startswith(f"{top.HOME}ccgroupctl top: engine ci, 1 build running, by memory")


def test_without_a_terminal_the_table_names_the_engine() -> None:
    out = io.StringIO()
    assert top.run(top_args(engine="ci"), Daemon(FIRST, SECOND), stdin=io.StringIO(),
                   stdout=out) == EXIT_OK
    assert out.getvalue().splitlines()[1].endswith("(engine ci's group, its builds included)")


# -- one table, JSON, and the choice between them ------------------------------------


class Daemon:
    """The daemon's stand-in: hands out the given replies in turn, counts the requests,
    and records the local modes of the ``watched`` terminal at each; at the first, types ``keys``
    on it (fd, bytes): top has set the terminal up by then (and flushed what came before)."""

    def __init__(self, *replies: dict[str, Any] | BaseException, watched: Any = None,
                 keys: tuple[int, bytes] | None = None) -> None:
        self.replies = list(replies)
        self.requests = 0
        self.watched = watched
        self.modes: list[int] = []
        self.keys = keys

    def __call__(self) -> dict[str, Any]:
        self.requests += 1
        if self.watched is not None:
            self.modes.append(termios.tcgetattr(self.watched.fileno())[3])
        if self.keys is not None:
            os.write(*self.keys)
            self.keys = None
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


FIRST = sample(100.0, 1_000_000, build("a", 0, 10 * MiB))
SECOND = sample(101.0, 2_000_000, build("a", 500_000, 20 * MiB), build("b", 10, 30 * MiB))


def top_args(**values: Any) -> Arguments:
    defaults = {"socket": "/run/s.sock", "timeout": None, "interval": 0.01, "once": False,
                "json": False, "sort": "cpu", "engine": None}
    return Arguments(**{**defaults, **values})


def test_without_a_terminal_it_prints_one_table() -> None:
    daemon = Daemon(FIRST, SECOND)
    out = io.StringIO()
    assert top.run(top_args(), daemon, stdin=io.StringIO(), stdout=out) == EXIT_OK
    assert daemon.requests == 2
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert [row[:2] for row in rows[1:]] == [["engine", "100.0"], ["a", "50.0"], ["b", "-"]]


def test_json_is_the_second_sample_with_cpu_percent() -> None:
    import json

    out = io.StringIO()
    waits: list[float] = []
    daemon = Daemon(FIRST, SECOND)
    assert top.print_once(daemon, "cpu", 1.5, out, as_json=True, sleep=waits.append) == EXIT_OK
    assert waits == [1.5]
    printed = json.loads(out.getvalue())
    assert printed == top.with_cpu_percent(FIRST, SECOND)
    assert [entry["cpu_percent"] for entry in printed["builds"]] == [50.0, None]


def test_the_daemons_refusal_is_raised_for_ctl_to_print() -> None:
    daemon = Daemon(CtlError("cannot reach ccgroupd", EXIT_UNREACHABLE))
    with pytest.raises(CtlError):
        top.run(top_args(once=True), daemon, stdin=io.StringIO(), stdout=io.StringIO())


# -- the live loop, on a pseudo-terminal -----------------------------------------------


@pytest.fixture
def terminal() -> Iterator[tuple[int, Any, Any]]:
    """The controlling side of a 100x20 pty, and its terminal side for reading and writing."""
    import fcntl
    import struct

    controller, terminal_fd = pty.openpty()
    fcntl.ioctl(terminal_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 100, 0, 0))
    with os.fdopen(terminal_fd) as keyboard, os.fdopen(os.dup(terminal_fd), "w") as screen:
        yield controller, keyboard, screen
    os.close(controller)


def output_of(controller: int) -> str:
    os.set_blocking(controller, False)
    chunks = []
    try:
        while chunk := os.read(controller, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode()


def test_keys_sort_and_quit_and_the_terminal_is_given_back(
        terminal: tuple[int, Any, Any]) -> None:
    controller, keyboard, screen = terminal
    before = termios.tcgetattr(keyboard.fileno())
    # Both keys at once: read one at a time, the second after the new order's frame.
    daemon = Daemon(FIRST, SECOND, watched=keyboard, keys=(controller, b"mq"))
    code = top.run(top_args(interval=5.0), daemon, stdin=keyboard, stdout=screen)
    assert code == EXIT_OK
    assert daemon.requests == 2  # the first frame, then one more for the new order
    assert daemon.modes  # cbreak while it ran: keys one at a time, unechoed
    assert all(not mode & (termios.ICANON | termios.ECHO) for mode in daemon.modes)
    assert termios.tcgetattr(keyboard.fileno()) == before
    shown = output_of(controller)
    assert shown.startswith(top.ENTER_SCREEN)
    assert shown.endswith(top.LEAVE_SCREEN)
    by_cpu, by_memory = shown.index("by CPU, every 5 s"), shown.index("by memory, every 5 s")
    assert by_cpu < by_memory
    frames = shown.split(top.HOME)
    assert "50.0" in frames[-1]  # the second frame has the CPU % of the two samples
    assert max(len(line) for line in frames[-1].replace(top.CLEAR_LINE, "").splitlines()) <= 100


@pytest.mark.parametrize("failure", [CtlError("ccgroupd did not answer", 1), KeyboardInterrupt()])
def test_the_terminal_is_given_back_on_errors_and_ctrl_c(terminal: tuple[int, Any, Any],
                                                        failure: BaseException) -> None:
    controller, keyboard, screen = terminal
    before = termios.tcgetattr(keyboard.fileno())
    # c keeps the order, so the loop goes on to its next sample, which fails.
    daemon = Daemon(FIRST, failure, keys=(controller, b"c"))
    if isinstance(failure, KeyboardInterrupt):  # Ctrl-C is a way to quit
        assert top.run(top_args(interval=0.05), daemon, stdin=keyboard,
                       stdout=screen) == EXIT_OK
    else:
        with pytest.raises(CtlError):
            top.run(top_args(interval=0.05), daemon, stdin=keyboard, stdout=screen)
    assert termios.tcgetattr(keyboard.fileno()) == before
    assert output_of(controller).endswith(top.LEAVE_SCREEN)
