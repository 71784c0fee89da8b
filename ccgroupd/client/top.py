"""`ccgroupctl top`: the engine and each running build, live, like `docker stats`.

Imported by ctl only for this command. The daemon's `builds` operation gives counters, not
rates: CPU % comes from two samples (usage_usec over the daemon's read_at_s clock), so a
build seen for the first time shows "-" until its second sample. Everything from samples
to lines of text is a pure function here (tests call them); `run` and the terminal loop
around them only fetch, wait for keys and write.
"""

from __future__ import annotations

import os
import select
import sys
import time

from ccgroupd.client.humanize import duration
from ccgroupd.errors import EXIT_OK, EXIT_USAGE, CtlError
from ccgroupd.values import describe_limit_value, format_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, TextIO

    Sample = dict[str, Any]
    Fetch = Callable[[], Sample]

SORT_KEYS = ("cpu", "memory")
KEYS_HELP = "c: sort by CPU, m: by memory, q: quit"
ID_WIDTH = 12  # BuildKit's ids are 25 characters; 12 tell them apart, as docker's do
ELLIPSIS = "..."
ENGINE_COMMAND = "(the engine's group, its builds included)"
NAMED_ENGINE_COMMAND = "(engine {name}'s group, its builds included)"
HEADERS = ("ID", "CPU %", "MEM", "PEAK", "PIDS", "AGE", "CPUS", "MEM MAX", "COMMAND")
NUMERIC = frozenset(HEADERS[1:8])  # right-aligned
# Clear to the end of each line, then of the screen: a frame overwrites the last in place.
CLEAR_LINE, CLEAR_BELOW, HOME = "\033[K", "\033[J", "\033[H"
# The alternate screen (the shell's scrollback comes back on exit) without a cursor.
ENTER_SCREEN, LEAVE_SCREEN = "\033[?1049h\033[?25l", "\033[?25h\033[?1049l"


# -- samples -------------------------------------------------------------------


def cpu_percent(before: Mapping[str, Any] | None, after: Mapping[str, Any],
                elapsed_s: float) -> float | None:
    """% of one CPU (250 = 2.5 CPUs) between two readings of one group; None when unknown:
    no earlier reading, a counter missing (the group was just removed) or gone backwards
    (a new group by the same path)."""
    if before is None or elapsed_s <= 0:
        return None
    used_before, used_after = before.get("usage_usec"), after.get("usage_usec")
    if used_before is None or used_after is None or used_after < used_before:
        return None
    return float(used_after - used_before) / (elapsed_s * 1e6) * 100


def with_cpu_percent(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> Sample:
    """``current`` with cpu_percent in the engine and each build, against ``previous``
    (None: the first sample). Builds are matched by their group."""
    elapsed_s = 0.0
    earlier: dict[str, Mapping[str, Any]] = {}
    engine_before = None
    if previous is not None:
        elapsed_s = current.get("read_at_s", 0.0) - previous.get("read_at_s", 0.0)
        earlier = {build.get("cgroup"): build for build in previous.get("builds", [])}
        engine_before = previous.get("engine")
    engine = current.get("engine") or {}
    return {
        **current,
        "engine": {**engine, "cpu_percent": cpu_percent(engine_before, engine, elapsed_s)},
        "builds": [{**build, "cpu_percent": cpu_percent(earlier.get(build.get("cgroup")),
                                                        build, elapsed_s)}
                   for build in current.get("builds", [])],
    }


def sorted_builds(builds: Iterable[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """Largest first by CPU % or by memory; unknown values last, ties by the other, then id."""
    def number(build: Mapping[str, Any], field: str) -> float:
        value = build.get(field)
        return -1.0 if value is None else float(value)

    fields = ("cpu_percent", "memory_current_bytes")
    first, second = fields if key == "cpu" else fields[::-1]
    by_id = sorted(builds, key=lambda build: str(build.get("id", "")))
    return sorted(by_id, key=lambda build: (number(build, first), number(build, second)),
                  reverse=True)


# -- text ----------------------------------------------------------------------


def _size(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def row_cells(entry: Mapping[str, Any], engine: bool = False,
              name: str | None = None) -> tuple[str, ...]:
    """One table row (HEADERS' columns) for the engine (called ``name``, if known) or a
    build, as text."""
    limits = entry.get("limits") or {}
    cpu, pids, age = entry.get("cpu_percent"), entry.get("pids_current"), entry.get("age_s")
    if engine:
        command = ENGINE_COMMAND if name is None else NAMED_ENGINE_COMMAND.format(name=name)
    else:
        command = entry.get("command") or "(starting)"
    return (
        "engine" if engine else str(entry.get("id", "?"))[:ID_WIDTH],
        "-" if cpu is None else f"{cpu:.1f}",
        _size(entry.get("memory_current_bytes")),
        _size(entry.get("memory_peak_bytes")),
        "-" if pids is None else str(pids),
        "-" if age is None else duration(age),
        describe_limit_value("cpus", limits.get("cpus")),
        describe_limit_value("memory", limits.get("memory")),
        " ".join(str(command).split()),  # one line, whatever the command line held
    )


def engine_name(sample: Mapping[str, Any], asked: str | None) -> str | None:
    """The engine's name: the reply's, else the one asked for (--engine), else None."""
    name = sample.get("name")
    return name if isinstance(name, str) else asked


def table(sample: Mapping[str, Any], key: str, width: int | None = None,
          asked: str | None = None) -> list[str]:
    """The header and a row each for the engine, then the builds by ``key``; no line longer
    than ``width`` (the command is cut, then the line), None for no limit. ``asked``: the
    engine's name as --engine gave it."""
    rows = [HEADERS, row_cells(sample.get("engine") or {}, engine=True,
                               name=engine_name(sample, asked))]
    rows += [row_cells(build) for build in sorted_builds(sample.get("builds", []), key)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADERS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.rjust(size) if header in NUMERIC else cell.ljust(size)
                 for cell, size, header in zip(row, widths, HEADERS, strict=False)]
        lines.append(fit(f"{'  '.join(cells)}  {row[-1]}", width))
    return lines


def fit(line: str, width: int | None) -> str:
    """``line`` cut to ``width`` characters, its end marked when something was cut."""
    if width is None or len(line) <= width:
        return line
    if width <= len(ELLIPSIS):
        return line[:width]
    return line[:width - len(ELLIPSIS)] + ELLIPSIS


def title(sample: Mapping[str, Any], key: str, interval_s: float,
          asked: str | None = None) -> str:
    count = len(sample.get("builds", []))
    builds = "1 build" if count == 1 else f"{count} builds"
    name = engine_name(sample, asked)
    engine = "" if name is None else f"engine {name}, "
    return (f"ccgroupctl top: {engine}{builds} running, by "
            f"{'CPU' if key == 'cpu' else 'memory'}, every {interval_s:g} s ({KEYS_HELP})")


# -- the command ---------------------------------------------------------------


def run(args: Any, fetch: Fetch, stdin: TextIO | None = None,
        stdout: TextIO | None = None) -> int:
    """`ccgroupctl top`. ``fetch`` asks the daemon for a sample (ctl's request, passed in:
    top does not import ctl, which imports top); ``stdin``/``stdout`` default to the
    process's (tests pass theirs)."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    interval_s = args.interval
    if not 0 < interval_s < float("inf"):
        raise CtlError(f"--interval must be a positive number of seconds, not {interval_s:g}",
                       EXIT_USAGE)
    if args.once or args.json or not stdout.isatty() or not stdin.isatty():
        return print_once(fetch, args.sort, interval_s, stdout, as_json=args.json,
                          asked=args.engine)
    return live(fetch, args.sort, interval_s, stdin, stdout, asked=args.engine)


def print_once(fetch: Fetch, key: str, interval_s: float, out: TextIO, *, as_json: bool = False,
               sleep: Callable[[float], None] = time.sleep, asked: str | None = None) -> int:
    """Two samples ``interval_s`` apart (CPU % needs both), printed as a table or as JSON;
    ``asked``: the engine's name as --engine gave it."""
    first = fetch()
    sleep(interval_s)
    sample = with_cpu_percent(first, fetch())
    if as_json:
        import json

        out.write(json.dumps(sample, indent=2, sort_keys=True) + "\n")
    else:
        out.write("\n".join(table(sample, key, terminal_width(out), asked)) + "\n")
    out.flush()
    return EXIT_OK


def terminal_width(stream: TextIO) -> int | None:
    """The terminal's columns, or None (no limit) when ``stream`` is not a terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else None
    except (OSError, ValueError):  # closed, or a stream without a descriptor
        return None


def wait_for_key(stream: TextIO, timeout_s: float) -> str | None:
    """One key typed on ``stream`` within ``timeout_s``, or None."""
    ready, _, _ = select.select([stream], [], [], max(timeout_s, 0.0))
    return os.read(stream.fileno(), 1).decode(errors="replace") if ready else None


def next_sort(pressed: str, key: str) -> str | None:
    """The order after a key press (c, m; any other key keeps it), or None for q.

    Lower case only: the bytes of arrow and function keys' escape sequences (ESC O Q is F2)
    arrive one at a time, and are upper case."""
    if pressed == "q":
        return None
    return {"c": "cpu", "m": "memory"}.get(pressed, key)


def frame(sample: Mapping[str, Any], key: str, interval_s: float,
          size: os.terminal_size, asked: str | None = None) -> str:
    """One screenful, written over the last from the top left corner. A terminal that says
    it is 0 wide or high (some ptys until set) is taken to have no limit."""
    width = size.columns or None
    lines = [fit(title(sample, key, interval_s, asked), width),
             *table(sample, key, width, asked)]
    lines = lines[:size.lines or None]
    return HOME + "".join(line + CLEAR_LINE + "\n" for line in lines)[:-1] + CLEAR_BELOW


def live(fetch: Fetch, key: str, interval_s: float, stdin: TextIO, stdout: TextIO, *,
         asked: str | None = None) -> int:
    """Redraw every ``interval_s`` until q or Ctrl-C; the terminal is given back as it was,
    whatever ends the loop (an error from the daemon too: ctl prints it afterwards)."""
    import termios
    import tty

    saved = termios.tcgetattr(stdin.fileno())
    try:
        # cbreak, not raw: keys arrive one at a time, unechoed, and Ctrl-C stays a signal.
        tty.setcbreak(stdin.fileno())
        stdout.write(ENTER_SCREEN)
        current = fetch()
        sample = with_cpu_percent(None, current)
        while True:
            stdout.write(frame(sample, key, interval_s, os.get_terminal_size(stdout.fileno()),
                               asked))
            stdout.flush()
            deadline = time.monotonic() + interval_s
            while (left := deadline - time.monotonic()) > 0:
                pressed = wait_for_key(stdin, left)
                if pressed is None:
                    continue
                new_key = next_sort(pressed, key)
                if new_key is None:
                    return EXIT_OK
                if new_key != key:
                    key = new_key
                    break  # show the new order now, with a fresh sample
            latest = fetch()
            sample, current = with_cpu_percent(current, latest), latest
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is a way to quit, as in docker stats
    finally:
        stdout.write(LEAVE_SCREEN)
        stdout.flush()
        termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)
