"""`heat-platform`: the command line of the platform.

Each subcommand is a thin shell over library code; heavy imports happen inside the handlers so
that `heat-platform --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from heat_platform.paths import PlatformPaths

Handler = Callable[[argparse.Namespace, PlatformPaths], int]


def _init(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.instance import prepare_instance

    dagster_home = prepare_instance(paths)
    print(f"platform home: {paths.home}")
    print(f"DAGSTER_HOME:  {dagster_home}")
    print(f"landing zone:  {paths.landing}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="heat-platform",
        description="Operate the heat-platform: synthetic experiments, the Dagster pipeline, "
        "model promotion and serving.",
    )
    parser.add_argument(
        "--home",
        help="platform home directory (default: $HEAT_PLATFORM_HOME or ./data)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers: dict[str, Handler] = {}

    commands.add_parser(
        "init", help="create the platform directories and the local Dagster instance",
        description="Create the platform home (landing zone, storage, DAGSTER_HOME with "
        "dagster.yaml, MLflow and BentoML stores). Idempotent.",
    )
    handlers["init"] = _init
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    paths = PlatformPaths(_resolve_home(args.home)) if args.home else PlatformPaths.from_env()
    return handlers[args.command](args, paths)


def _resolve_home(home: str):
    from pathlib import Path

    return Path(home).expanduser().resolve()


if __name__ == "__main__":
    sys.exit(main())
