"""The `mmrwkv` command line: one subcommand group per module in `mmrwkv.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from mmrwkv.errors import MMRWKVError

# Each module exposes `register(subparsers)`; handlers import heavy dependencies lazily.
COMMAND_MODULES = [
    "mmrwkv.commands.model",
    "mmrwkv.commands.generate",
    "mmrwkv.commands.bench",
    "mmrwkv.commands.recipe",
    "mmrwkv.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrwkv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMRWKVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
