"""`mmrwkv train`, `mmrwkv eval`, `mmrwkv run` (a recipe file or a packaged recipe's name, plus `a.b.c=value`
overrides) and `mmrwkv recipes list | show | copy | validate`."""

from __future__ import annotations

import argparse

EVAL_EPILOG = """after RECIPE, in any order:
  --checkpoint CKPT  (required) a model directory (config.json + model.safetensors), a step checkpoint,
                     a stage directory or its checkpoints/ directory (the newest step)
  --out DIR          report directory (default: eval.report.dir, else <train.output_dir>/eval-<split>)
  KEY=VALUE          recipe overrides, e.g. eval.max_samples=500

example:
  mmrwkv eval recipes/easy_vqa.yaml --checkpoint runs/easy_vqa/all/final eval.max_samples=500"""
RECIPE_EPILOG = """overrides: a.b.c=value (YAML values); a stage by name or index: stages.media.train.max_steps=5
(a stage's own train.max_steps wins over a top-level train.max_steps).
example:
  mmrwkv {command} recipes/easy_vqa.yaml stages.media.train.max_steps=5 stages.open.train.max_steps=5 \\
      stages.all.train.max_steps=5 train.output_dir=runs/try"""


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file, or a packaged recipe's name (`mmrwkv recipes list`)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. train.lr.backbone=3e-4")


def register(sub) -> None:
    """Add the train / eval / run subcommands."""
    p = sub.add_parser(
        "train",
        help="train every stage of a recipe (Lightning)",
        epilog=RECIPE_EPILOG.format(command="train"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _recipe_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of each stage")
    p.add_argument("--fresh", action="store_true", help="delete the stages' output directories first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    from mmrwkv.commands.eval_task import TASK_EPILOG, add_task_options

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the recipe's eval split or on benchmark tasks (RNN-mode generation)",
        usage="mmrwkv eval RECIPE --checkpoint CKPT [--out DIR] [KEY=VALUE ...]\n"
        "       mmrwkv eval (--task NAME | --suite A,B,C) --checkpoint CKPT --data-root DIR [options]",
        epilog=EVAL_EPILOG + "\n\n" + TASK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML file, or a packaged recipe's name (`mmrwkv recipes list`)")
    add_task_options(p)
    # REMAINDER keeps overrides that follow --checkpoint (argparse cannot interleave positionals); parsed below
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "run",
        help="train all stages (resuming finished work), evaluate, print the report",
        epilog=RECIPE_EPILOG.format(command="run"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _recipe_args(p)
    p.add_argument("--fresh", action="store_true", help="delete the stages' output directories first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
    _register_recipes(sub)


def _register_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="packaged recipes: list, show, copy, validate")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list", help="the packaged recipes by name, with their descriptions")
    q.set_defaults(func=_recipes_list)
    q = rsub.add_parser("show", help="print a recipe (packaged name or file)")
    q.add_argument("name")
    q.set_defaults(func=_recipes_show)
    q = rsub.add_parser("copy", help="copy a packaged recipe to DEST (a file or a directory) to edit it")
    q.add_argument("name")
    q.add_argument("dest")
    q.add_argument("--force", action="store_true", help="overwrite DEST when it exists")
    q.set_defaults(func=_recipes_copy)
    q = rsub.add_parser(
        "validate",
        help="check a recipe without loading weights: types, files that exist, media tokens vs max_text_tokens",
    )
    q.add_argument("recipe", help="recipe file or packaged name")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    q.set_defaults(func=_recipes_validate)


def _checked_recipe(args):
    """The recipe with every stage's encoder arguments checked, before the training stack (Lightning) is imported."""
    from mmrwkv.config import expand_stages, load_config
    from mmrwkv.encoders.registry import check_specs
    from mmrwkv.recipe_catalog import resolve_recipe

    cfg = load_config(resolve_recipe(args.recipe), args.overrides)
    for stage in expand_stages(cfg):
        check_specs(stage.encoders)
    return cfg


def _train(args) -> int:
    cfg = _checked_recipe(args)
    from mmrwkv.training.train import train_recipe

    for result in train_recipe(cfg, resume=args.resume, fresh=args.fresh, progress=not args.no_progress):
        print(f"final model: {result.final}  (last train loss {result.last_loss})")
    return 0


def _eval_options(rest: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmrwkv eval RECIPE")
    parser.add_argument("--checkpoint", required=True, help="model directory, step checkpoint or stage directory")
    parser.add_argument("--out", help="report directory (default: eval.report.dir or <output_dir>/eval-<split>)")
    options, overrides = parser.parse_known_args(rest)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    options.overrides = overrides
    return options


def _eval(args) -> int:
    from mmrwkv.commands.eval_task import run_tasks
    from mmrwkv.config import load_config
    from mmrwkv.evaluation.predict import evaluate_recipe
    from mmrwkv.recipe_catalog import resolve_recipe

    if args.task or args.suite or args.list_tasks or args.recipe is None:
        return run_tasks(args)
    # options given before RECIPE were parsed by the subcommand; the recipe form reads them from `rest`
    given = [
        x for flag, value in (("--checkpoint", args.checkpoint), ("--out", args.out)) if value for x in (flag, value)
    ]
    options = _eval_options(given + args.rest)
    cfg = load_config(resolve_recipe(args.recipe), options.overrides)
    report = evaluate_recipe(cfg, options.checkpoint, out_dir=options.out)
    print(report.markdown)
    return 0


def _run(args) -> int:
    cfg = _checked_recipe(args)
    from mmrwkv.training.train_and_evaluate import run_recipe

    report = run_recipe(cfg, fresh=args.fresh, progress=not args.no_progress)
    print(report.markdown)
    return 0


def _recipes_list(args) -> int:
    from mmrwkv.recipe_catalog import packaged_recipes, recipe_summary

    recipes = packaged_recipes()
    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {recipe_summary(path)}")
    return 0


def _recipes_show(args) -> int:
    from mmrwkv.recipe_catalog import resolve_recipe

    path = resolve_recipe(args.name)
    print(f"# {path}")
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def _recipes_copy(args) -> int:
    from mmrwkv.recipe_catalog import copy_recipe

    target = copy_recipe(args.name, args.dest, force=args.force)
    print(f"copied to {target}; run it with: mmrwkv run {target}")
    return 0


def _recipes_validate(args) -> int:
    from mmrwkv.recipe_catalog import validate_recipe

    result = validate_recipe(args.recipe, args.overrides)
    for note in result.notes:
        print(f"note: {note}")
    for problem in result.problems:
        print(f"problem: {problem}")
    print(f"{result.path}: {'ok' if result.ok else f'{len(result.problems)} problem(s)'}")
    return 0 if result.ok else 1
