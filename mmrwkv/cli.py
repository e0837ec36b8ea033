"""The `mmrwkv` command line: one subcommand group per module in `mmrwkv.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mmrwkv.errors import ConfigError, MMRWKVError

# Each module exposes `register(subparsers)`; handlers import heavy dependencies lazily.
COMMAND_MODULES = [
    "mmrwkv.commands.model",
    "mmrwkv.commands.generate",
    "mmrwkv.commands.bench",
    "mmrwkv.commands.recipe",
    "mmrwkv.commands.demo",
    "mmrwkv.commands.serve",
    "mmrwkv.commands.stream",
]


DESCRIPTION = "Multimodal RWKV: checkpoints, RNN-mode generation, recipes (train / eval / run), demos, benchmarks."
EXAMPLES = """examples (from a checkout; `make run` trains the default recipe into runs/easy_vqa):
  mmrwkv run recipes/easy_vqa.yaml
  mmrwkv run recipes/easy_vqa.yaml stages.media.train.max_steps=5 stages.open.train.max_steps=5 \\
      stages.all.train.max_steps=5 eval.max_samples=50 train.output_dir=runs/try   # a short try of every stage
  mmrwkv generate --checkpoint runs/easy_vqa/all/final --image img.png --prompt "what color is the shape?"
  mmrwkv eval recipes/easy_vqa.yaml --checkpoint runs/easy_vqa/all/final eval.max_samples=500
  mmrwkv train recipes/scenes_caption.yaml train.lr.backbone=1e-3 train.epochs=3
  mmrwkv init v7-0.1b random.pth && mmrwkv info random.pth
  mmrwkv convert RWKV-x070-World-0.1B.pth ours/    # and back: mmrwkv convert ours/ out.pth
  mmrwkv demo                                      # or: mmrwkv demo --random-tiny, mmrwkv demo --app caption
  mmrwkv bench decode --threads 1
  mmrwkv recipes list                              # packaged recipes; `mmrwkv run llava_v7` runs one by name
  mmrwkv serve runs/easy_vqa/all/final             # OpenAI-compatible API on 127.0.0.1:8000/v1
`mmrwkv COMMAND --help` lists each command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmrwkv", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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


def check_device(name: str | None) -> None:
    """A `--device` this machine has: a ConfigError saying what is there instead of torch's traceback."""
    if name is None or name == "cpu":
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r}: not a device name ({err}); e.g. cpu, cuda, cuda:1") from None
    if device.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"--device {name!r}: no CUDA GPU is visible here (torch.cuda.is_available() is False); use --device cpu"
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(f"--device {name!r}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_device(getattr(args, "device", None))
        code = int(args.func(args) or 0)
        # flushed here, so that a closed pipe is caught below rather than at the interpreter's exit
        sys.stdout.flush()
        return code
    except MMRWKVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`mmrwkv info X | head`): stop quietly, as other command-line tools do; stdout
        # goes to /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
