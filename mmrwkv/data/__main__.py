"""Prepare a synthetic dataset split once: `python -m mmrwkv.data shapes --split train --size 1000`."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the split and print where it is and a few samples."""
    parser = argparse.ArgumentParser(prog="python -m mmrwkv.data", description=__doc__)
    parser.add_argument("kind", choices=["shapes", "tones"])
    parser.add_argument("--root", default=None, help="output folder (default data/<kind>)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="samples to print")
    args = parser.parse_args(argv)
    from mmrwkv.data.shapes import load_shapes
    from mmrwkv.data.tones import load_tones

    load = load_shapes if args.kind == "shapes" else load_tones
    data = load(args.root or f"data/{args.kind}", args.split, args.size, seed=args.seed)
    media = (data[0].images or data[0].audio)[0].parent if len(data) else None
    print(f"{args.kind}/{args.split}: {len(data)} samples from {args.size} items in {media}")
    for sample in data.samples[: args.show]:
        print(f"  {sample.id}: {sample.conversation()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
