"""ccgroupctl's command-line tables and defaults, shared by its two parsers.

ctl reads the common command lines from these tables (quick_parse) and builds the
requests; argparser builds argparse's parser, help and errors from the same tables.
They are factored out to keep the imports one way: argparser and ctl import this
leaf (which imports only the standard library and ccgroupd's leaves), ctl imports
argparser lazily for what quick_parse leaves, and argparser never imports ctl.
"""

from __future__ import annotations

import os

from ccgroupd import protocol

# The daemon's unit: its records carry it in _SYSTEMD_UNIT, a field journald sets itself.
DAEMON_UNIT = "ccgroupd.service"
SOCKET_ENV = "CCGROUPD_API__SOCKET"  # the same variable that overrides api.socket for the daemon
START_HINT = "is it running? systemctl start ccgroupd"

# Seconds to wait for the reply. A memory.max write can sit in kernel reclaim,
# and restarting the engine waits for its graceful stop (minutes by default).
DEFAULT_TIMEOUT_S = {
    protocol.OP_STATUS: 10.0,
    protocol.OP_BUILDS: 10.0,
    protocol.OP_SET: 120.0,
    protocol.OP_RESET: 120.0,
    protocol.OP_RELOAD: 120.0,
    protocol.OP_RESTART_ENGINE: 900.0,
}

# --option -> limit name, as in the config file's [limits] table, and argparse's help
# (where a percent sign is written %%).
SET_OPTIONS = {
    "cpus": ("--cpus", "CPUs the engine may use, e.g. 4, 0.5 or 50%% of the host (cpu.max)"),
    "memory": ("--memory", "hard memory limit, e.g. 8G, 512M or 75%% of the host's memory "
                           "(memory.max)"),
    "memory_high": ("--memory-high", "memory throttling threshold (memory.high)"),
    "memory_swap": ("--swap", "swap on top of memory, e.g. 2G or 0 (memory.swap.max)"),
    "pids": ("--pids", "maximum number of processes (pids.max)"),
    "cpu_weight": ("--cpu-weight", "relative CPU weight 1-10000, default 100 (cpu.weight)"),
    "memory_min": ("--memory-min", "memory the kernel never reclaims, e.g. 1G or 0 (memory.min)"),
    "memory_low": ("--memory-low", "memory reclaimed only under pressure, e.g. 2G (memory.low)"),
    "io_weight": ("--io-weight", "relative disk I/O weight 1-10000, default 100 (io.weight)"),
    "cpuset_cpus": ("--cpuset-cpus", "CPUs to run on, e.g. 0-3,6; '' for all (cpuset.cpus)"),
    "cpuset_mems": ("--cpuset-mems", "memory nodes to use, e.g. 0; '' for all (cpuset.mems)"),
}
# The same limits as the default of each build (the config file's [builds] table):
# limit name -> (--build-OPTION, the attribute the parsers give it). Derived, so that
# a limit's option has one home: --swap is --build-swap.
BUILD_SET_OPTIONS = {name: (f"--build-{option[2:]}", f"build_{name}")
                     for name, (option, _) in SET_OPTIONS.items()}

# The on/off options of each command that talks to the daemon, besides --json.
COMMAND_FLAGS = {
    protocol.OP_SET: {
        "--runtime": "only until the daemon restarts",
        "--running": "also give the --build-* limits to the builds running now "
                     "(else only to builds that start from now on)",
        "--force": "allow a memory limit at or below current usage (the kernel will "
                   "OOM-kill inside the group)",
    },
    protocol.OP_STATUS: {},
    protocol.OP_RESET: {
        "--force": "also when the config file's memory limit is at or below current usage "
                   "(the kernel will OOM-kill inside the group)",
    },
    protocol.OP_RELOAD: {},
    protocol.OP_RESTART_ENGINE: {},
}


def default_socket_path() -> str:
    """--socket when the command line does not say: $CCGROUPD_API__SOCKET, or the daemon's."""
    return os.environ.get(SOCKET_ENV, protocol.DEFAULT_SOCKET_PATH)


# The commands that act on one engine: they take --engine NAME, before the command (a
# global option, like --socket) or after it. `reload` re-reads the configuration of every
# engine and takes none. "top" and "events" are the client's own commands.
ENGINE_OPTION = "--engine"
ENGINE_COMMANDS = (protocol.OP_STATUS, "top", protocol.OP_SET, protocol.OP_RESET,
                   protocol.OP_RESTART_ENGINE, "events")
ENGINE_HELP = ("the engine to act on, when several run on this host (ccgroupctl status "
               "lists them); may be left out when one runs")
