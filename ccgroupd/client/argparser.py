"""ccgroupctl's full command line parser (argparse): help, errors, --version, `events`.

ccgroupd.client.ctl.quick_parse reads the common command lines without it; everything it
does not accept comes here, so that help and error messages are argparse's. Both read the
tables in ccgroupd.client.options; this module does not import ctl.
"""

from __future__ import annotations

import argparse
import os
import sys

from ccgroupd import __version__, protocol
from ccgroupd.client.options import (
    BUILD_SET_OPTIONS,
    COMMAND_FLAGS,
    ENGINE_COMMANDS,
    ENGINE_HELP,
    ENGINE_OPTION,
    SET_OPTIONS,
    SOCKET_ENV,
    default_socket_path,
)
from ccgroupd.errors import EXIT_USAGE, exit_codes_help

TYPE_CHECKING = False  # typing costs start-up time; see ccgroupd.client.ctl
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

EPILOG = f"""\
values take the forms of the config file: sizes as bytes, K/M/G/T or KiB/MiB/GiB/TiB
(powers of 1024), max for no limit; --cpus 0.5 means half a CPU.

status --json schema (version 1; fields are only ever added):
  cgroup.path            absolute path of the engine's cgroup
  limits.<name>.value    effective value: cpus (float), memory, memory_high,
                         memory_swap (bytes), pids, cpu_weight (int); null = no limit
  limits.<name>.source   "config", "persisted" (set) or "runtime" (set --runtime)
  limits.<name>.set_by   what to edit to change it: the config file, drop-in or
                         variable that set it, "default", or the state file
  usage.cpu_percent      CPU use in % of one CPU (250 = 2.5 CPUs), recent average
  usage.memory_bytes     memory.current; usage.memory_percent = % of memory.max
  usage.swap_bytes       memory.swap.current; usage.pids = pids.current
  events.<name>          violations counted since the daemon started: oom_kill, oom,
                         memory_max, memory_high, swap_max, pids_max, cpu_throttled
  engine                 state, pid, uptime_s, restarts; last_exit (exit_code, signal,
                         oom_killed, error) once it ended without being asked to
  name                   the engine's name, from daemons that run engines by name
  builds                 running, started_total, finished_total, unaccounted_total,
                         largest (id, cgroup, command, memory_current_bytes) and
                         defaults (the limits each new build gets); from daemons
                         that track builds
  engines                without --engine: the status of each engine (the fields
                         above); where one runs, its fields are also at the top
                         level, for one more release only
  budget                 without --engine: null, or the engines' parent group's
                         cgroup, limits (as above, a share of the host also as
                         relative: "75%"), usage (cpu_cores, memory_bytes, pids),
                         guarantees (memory_min_bytes, memory_low_bytes) and shares
                         (by engine: cpu_weight, cpu_share, memory_low_bytes)
  any value may be null when the daemon cannot tell (e.g. the engine is restarting).

the socket is {protocol.DEFAULT_SOCKET_PATH} unless --socket or ${SOCKET_ENV} says otherwise.

{exit_codes_help("ccgroupctl")}"""


# Options whose value may start with "-": journalctl's relative times ("-1h").
TIME_OPTIONS = ("--since",)


def joined_time_values(argv: Sequence[str]) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: argparse would take "-1h" for an option."""
    joined = list(argv)
    for index in range(len(joined) - 1, 0, -1):
        value = joined[index]
        if joined[index - 1] in TIME_OPTIONS and value[:1] == "-" and value[1:2].isdigit():
            joined[index - 1:index + 1] = [f"{joined[index - 1]}={value}"]
    return joined


class _Parser(argparse.ArgumentParser):
    def __init__(self, *, formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
                 **kwargs: Any) -> None:
        def formatter(prog: str) -> argparse.HelpFormatter:
            # argparse builds formatters on every run, not only for --help, and would ask
            # shutil for the width: importing shutil (with bz2, lzma and zlib) costs more
            # start-up time than building all the parsers.
            return formatter_class(prog, width=_help_width())

        # No abbreviations: `--mem 1G` must not quietly mean --memory or --memory-high.
        super().__init__(allow_abbrev=False, formatter_class=formatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        # One line, like every other ccgroupctl error, instead of argparse's usage dump.
        self.exit(EXIT_USAGE, f"ccgroupctl: {message} (see ccgroupctl --help)\n")


def _help_width() -> int:
    """What argparse uses, shutil.get_terminal_size().columns - 2, without shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (ValueError, OSError):  # not a terminal, or stdout closed
            columns = 0
    return (columns or 80) - 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ccgroupctl",
        description="Change and inspect the limits ccgroupd keeps on the Dagger engine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ccgroupctl {__version__}")
    parser.add_argument("--socket", metavar="PATH",
                        default=default_socket_path(),
                        help="the daemon's control socket (default: %(default)s)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="how long to wait for the daemon's answer")
    parser.add_argument(ENGINE_OPTION, metavar="NAME", help=ENGINE_HELP)
    json_option = _Parser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="print the reply as JSON")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # After the command too. SUPPRESS: given only before it, the subcommand's parser must
    # not overwrite the value with a default of its own (argparse copies every value the
    # subparser has into the result).
    engine_option = _Parser(add_help=False)
    engine_option.add_argument(ENGINE_OPTION, metavar="NAME", default=argparse.SUPPRESS,
                               help=ENGINE_HELP)

    def parents(command: str) -> list[_Parser]:
        return [json_option, engine_option] if command in ENGINE_COMMANDS else [json_option]

    set_parser = commands.add_parser(
        "set", parents=parents("set"), help="change limits (persisted unless --runtime)",
        description="Change limits of the running engine. Changes persist across daemon "
                    "restarts unless --runtime is given; `reset` drops them.")
    for name, (option, text) in SET_OPTIONS.items():
        set_parser.add_argument(option, dest=name, metavar="VALUE", help=text)
    for name, (option, dest) in BUILD_SET_OPTIONS.items():
        set_parser.add_argument(option, dest=dest, metavar="VALUE",
                                help=f"as {SET_OPTIONS[name][0]}, for each new build "
                                     f"([builds] {name})")
    for option, text in COMMAND_FLAGS[protocol.OP_SET].items():
        set_parser.add_argument(option, action="store_true", help=text)
    commands.add_parser("status", parents=parents("status"),
                        help="limits and their sources, usage, events, engine state")
    reset_parser = commands.add_parser(
        "reset", parents=parents("reset"),
        help="drop all changes: back to the config file's limits")
    for option, text in COMMAND_FLAGS[protocol.OP_RESET].items():
        reset_parser.add_argument(option, action="store_true", help=text)
    commands.add_parser("reload", parents=parents("reload"), help="re-read the config file")
    top_parser = commands.add_parser(
        "top", parents=parents("top"), help="live usage and limits of the engine and each build",
        description="A table of the engine and each running build (CPU, memory, peak, "
                    "processes, age, limits), refreshed until q. Keys: c sorts by CPU, "
                    "m by memory. Without a terminal, or with --once or --json, prints once.")
    top_parser.add_argument("--once", action="store_true",
                            help="print one table (two samples an interval apart) and exit")
    top_parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                            help="between samples (default: %(default)g)")
    top_parser.add_argument("--sort", choices=("cpu", "memory"), default="cpu",
                            help="order of the builds (default: %(default)s)")
    commands.add_parser("restart-engine", parents=parents("restart-engine"),
                        help="stop the engine gracefully and start it again")
    events_parser = commands.add_parser(
        "events", parents=parents("events"), help="recent limit violations from the journal",
        description="Violation records (OOM kills, limit hits, throttling) from journald.")
    events_parser.add_argument("--since", metavar="TIME",
                               help="as journalctl understands it: '1 hour ago', 'today', ...")
    events_parser.add_argument("--follow", "-f", action="store_true",
                               help="keep printing new records")
    events_parser.add_argument("--lines", "-n", type=int, default=50, metavar="N",
                               help="show at most N past records (default: %(default)s)")
    events_parser.add_argument("--all", action="store_true",
                               help="every ccgroupd event, not only violations")
    return parser
