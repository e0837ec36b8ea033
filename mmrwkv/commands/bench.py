"""`mmrwkv bench NAME`: side-by-side benchmarks printed as tables."""

from __future__ import annotations

import importlib

from mmrwkv.bench import BENCHMARKS


def register(sub) -> None:
    parser = sub.add_parser("bench", help="run a benchmark")
    names = parser.add_subparsers(dest="bench", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        p = names.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
