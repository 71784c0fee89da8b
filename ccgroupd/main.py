"""`ccgroupd`: the daemon (`ccgroupd run`) and its preflight (`ccgroupd check`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccgroupd import __version__
from ccgroupd.errors import EXIT_FAILURE, CcgroupdError, exit_codes_help

EPILOG = exit_codes_help("ccgroupd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccgroupd",
        description="Keep the Dagger engine and its build containers inside cgroup v2 limits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ccgroupd {__version__}")
    parser.add_argument("--config", type=Path, default=None, metavar="PATH",
                        help="configuration file (default: /etc/ccgroupd/config.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the daemon (what the systemd unit starts)")
    check = commands.add_parser(
        "check", help="say whether this host can run ccgroupd, and what to fix")
    check.add_argument("--config-only", action="store_true",
                       help="validate the configuration (the file, its config.d drop-ins and "
                            "the environment) without looking at the host: exit 0 or 3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            from ccgroupd.daemon.check import run_check

            return run_check(args.config, config_only=args.config_only)
        if args.command == "run":
            from ccgroupd.daemon.daemon import run_daemon

            return run_daemon(args.config)
    except CcgroupdError as error:
        print(f"ccgroupd: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_FAILURE
    build_parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
