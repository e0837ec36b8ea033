"""`mmrwkv eval --task NAME` and `mmrwkv eval --suite a,b,c`: benchmark tasks without a recipe (options added
to the `eval` subcommand, whose recipe form lives in `mmrwkv.commands.recipe`)."""

from __future__ import annotations

import argparse

TASK_EPILOG = """benchmark tasks (no recipe): --task NAME or --suite a,b,c with --checkpoint and --data-root:
  mmrwkv eval --task gqa --checkpoint runs/x/final --data-root data/gqa
  mmrwkv eval --suite pope,mme,scienceqa_img --checkpoint runs/x/final --data-root data --max-samples 200
  (with --suite, each task reads DATA_ROOT/<task>/ when that folder exists, else DATA_ROOT)
`mmrwkv eval --list-tasks` prints every task, its files and prompt."""


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """The benchmark-task options of `mmrwkv eval`."""
    group = parser.add_argument_group("benchmark tasks (instead of RECIPE)")
    group.add_argument("--task", help="one benchmark task, e.g. gqa, textvqa, pope, mme (see --list-tasks)")
    group.add_argument("--suite", help="comma-separated tasks; writes suite.md beside the task reports")
    group.add_argument("--list-tasks", action="store_true", help="list the tasks, their files and prompts")
    group.add_argument("--checkpoint", help="model directory, step checkpoint or stage directory")
    group.add_argument("--data-root", help="folder holding the task's official files (default: .)")
    group.add_argument("--out", help="report directory (default: runs/eval/<task> or runs/eval/suite)")
    group.add_argument("--max-samples", type=int, help="a seeded subset (MMBench: questions, MME: images)")
    group.add_argument("--batch-size", type=int, default=8, help="prompts decoded together (default 8)")
    group.add_argument("--prompt", help="replace the task's prompt (e.g. the caption prompt a model was tuned on)")
    group.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="ROLE=PATH",
        help="a file role's path instead of its default under --data-root, e.g. images=/coco/val2014 "
        "(with --suite, TASK.ROLE=PATH for one task)",
    )
    group.add_argument(
        "--caption-tokenizer",
        default="auto",
        choices=("auto", "java", "python"),
        help="PTB tokenizer of caption tasks: auto = Java when available (METEOR needs it)",
    )
    group.add_argument("--device", help="cpu (default) or cuda[:N]")


def _paths(items: list[str]) -> dict[str, str]:
    from mmrwkv.errors import ConfigError

    out = {}
    for item in items:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise ConfigError(f"--path {item!r}: expected ROLE=PATH, e.g. images=/data/coco/val2014")
        out[role] = path
    return out


def list_tasks() -> str:
    """One paragraph per task: description, files under the data root, prompt."""
    from mmrwkv.evaluation.tasks import TASKS

    lines = []
    for task in TASKS.values():
        lines += [
            f"{task.name}: {task.description}",
            f"  files: {task.layout()}",
            f"  prompt: {task.prompt!r}",
            f"  data: {task.source}",
            "",
        ]
    return "\n".join(lines)


def run_tasks(args) -> int:
    """Handle `mmrwkv eval --task/--suite/--list-tasks`."""
    from mmrwkv.errors import ConfigError

    if args.list_tasks:
        print(list_tasks())
        return 0
    if args.task and args.suite:
        raise ConfigError("give --task or --suite, not both")
    if args.recipe is not None or args.rest:
        raise ConfigError(f"--task/--suite take no RECIPE or KEY=VALUE arguments, got {[args.recipe, *args.rest]}")
    if not args.checkpoint:
        raise ConfigError("--task/--suite need --checkpoint (a model directory, step checkpoint or stage directory)")
    from mmrwkv.evaluation.run_task import evaluate_suite, evaluate_task, load_model

    model = load_model(args.checkpoint, args.device)
    options = {
        "max_samples": args.max_samples,
        "batch_size": args.batch_size,
        "prompt": args.prompt,
        "paths": _paths(args.path),
        "caption_tokenizer": args.caption_tokenizer,
        "progress": True,
    }
    if args.task:
        run = evaluate_task(
            args.task,
            model,
            args.data_root,
            out_dir=args.out or f"runs/eval/{args.task}",
            checkpoint=args.checkpoint,
            **options,
        )
        print((run.out_dir / "report.md").read_text(encoding="utf-8"))
        return 0
    names = [n.strip() for n in args.suite.split(",") if n.strip()]
    _, table = evaluate_suite(
        names, model, args.data_root, out_dir=args.out or "runs/eval/suite", checkpoint=args.checkpoint, **options
    )
    print(table.read_text(encoding="utf-8"))
    return 0
