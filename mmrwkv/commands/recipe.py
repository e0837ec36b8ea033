"""`mmrwkv train`, `mmrwkv eval` and `mmrwkv run`: a YAML recipe plus `a.b.c=value` overrides."""

from __future__ import annotations

import argparse


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. train.lr.backbone=3e-4")


def register(sub) -> None:
    """Add the train / eval / run subcommands."""
    p = sub.add_parser("train", help="train every stage of a recipe (Lightning)")
    _recipe_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of each stage")
    p.add_argument("--fresh", action="store_true", help="delete the stages' output directories first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's eval split (RNN-mode generation)")
    _recipe_args(p)
    p.add_argument("--checkpoint", required=True, help="model directory, step checkpoint or stage directory")
    p.add_argument("--out", help="report directory (default: eval.report.dir or <output_dir>/eval)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("run", help="train all stages (resuming finished work), evaluate, print the report")
    _recipe_args(p)
    p.add_argument("--fresh", action="store_true", help="delete the stages' output directories first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _train(args) -> int:
    from mmrwkv.config import load_config
    from mmrwkv.training.run import train_recipe

    cfg = load_config(args.recipe, args.overrides)
    for result in train_recipe(cfg, resume=args.resume, fresh=args.fresh, progress=not args.no_progress):
        print(f"final model: {result.final}  (last train loss {result.last_loss})")
    return 0


def _eval(args) -> int:
    from mmrwkv.config import load_config
    from mmrwkv.training.evaluate import evaluate_recipe

    cfg = load_config(args.recipe, args.overrides)
    report = evaluate_recipe(cfg, args.checkpoint, out_dir=args.out)
    print(report.markdown)
    return 0


def _run(args) -> int:
    from mmrwkv.config import load_config
    from mmrwkv.training.pipeline import run_recipe

    cfg = load_config(args.recipe, args.overrides)
    report = run_recipe(cfg, fresh=args.fresh, progress=not args.no_progress)
    print(report.markdown)
    return 0
