"""`mmrwkv stream-eval`: a stream model's exact match at 1x, 4x, 16x its training length (held-out streams)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    """Add the `stream-eval` subcommand."""
    p = sub.add_parser("stream-eval", help="length generalisation of a stream model (recipes/stream_qa.yaml)")
    p.add_argument("--checkpoint", required=True, help="model directory, step checkpoint or stage directory")
    p.add_argument("--lengths", default="1,4,16", help="comma-separated multiples of the training length")
    p.add_argument("--windows", type=int, default=12, help="training stream length in windows (the recipe's)")
    p.add_argument("--streams", type=int, default=60, help="held-out streams per length (3 questions each)")
    p.add_argument("--data-root", default="data/streams", help="where the held-out streams are generated")
    p.add_argument("--seed", type=int, default=1, help="held-out data seed (the recipe trains on seed 0)")
    p.add_argument("--out", type=Path, default=None, help="curve PNG + JSON folder (default: beside the checkpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrwkv.evaluation.predict import resolve_checkpoint
    from mmrwkv.evaluation.stream_eval import length_curve, plot_curve
    from mmrwkv.multimodal import MultimodalRWKV

    path = resolve_checkpoint(args.checkpoint)
    try:
        multipliers = sorted({int(m) for m in args.lengths.split(",")})
    except ValueError:
        raise SystemExit(f"--lengths {args.lengths!r}: comma-separated whole numbers, e.g. 1,4,16") from None
    model = MultimodalRWKV.load(path).eval()
    curve = length_curve(
        model,
        root=args.data_root,
        base_windows=args.windows,
        multipliers=multipliers,
        streams=args.streams,
        seed=args.seed,
        progress=True,
    )
    out = args.out or Path(path).parent / "stream-eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps({"checkpoint": str(path), "curve": curve}, indent=1))
    plot_curve(curve, out / "curve.png", f"held-out streams, {args.windows} windows = 1x")
    for m in multipliers:
        templates = ", ".join(f"{k}: {v:.2f}" for k, v in curve[m]["by_template"].items())
        print(f"{m}x: {curve[m]['exact_match']:.3f} ({templates})")
    print(f"curve: {out / 'curve.png'}")
    return 0
