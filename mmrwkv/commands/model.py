"""`mmrwkv info CKPT`, `mmrwkv convert IN OUT`, `mmrwkv init SIZE OUT`: RWKV checkpoints on the command line."""

from __future__ import annotations

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def register(sub) -> None:
    """Add the `info`, `convert` and `init` subcommands."""
    p = sub.add_parser("info", help="print an RWKV checkpoint's generation, sizes and parameter count")
    p.add_argument(
        "checkpoint",
        help="our checkpoint directory (an RWKV or a trained multimodal one, e.g. runs/easy_vqa/all/final), an "
        "official .pth, or a named size (v7-0.1b)",
    )
    p.set_defaults(func=run_info)

    p = sub.add_parser(
        "convert",
        help="convert between ours, official .pth and HF/fla directories (the input's format is detected)",
    )
    p.add_argument("src", help="our checkpoint directory, an official .pth, or a HF RWKV-4/5/6 or fla RWKV-7 directory")
    p.add_argument("dst", help="a .pth path (official format) or a directory (ours, or with --to hf the HF/fla one)")
    p.add_argument(
        "--to",
        choices=["ours", "official", "hf", "hf-rwkv4", "hf-rwkv5", "hf-rwkv6", "fla-rwkv7"],
        default=None,
        help="output format (default: official for a .pth name, else ours; hf: the generation's HF format, "
        "fla-rwkv7 for RWKV-7)",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weight dtype (default: as stored)")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("init", help="write a from-scratch model of a named size (see `mmrwkv.rwkv.SIZES`)")
    p.add_argument("size", help="a named size such as v7-tiny or v7-0.1b")
    p.add_argument("dst", help="output: a directory (ours) or a .pth path (official format)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_init)


def _dtype(name: str | None):
    import torch

    return getattr(torch, DTYPES[name]) if name else None


def _describe_size(name: str) -> dict:
    import torch

    from mmrwkv.rwkv import RWKV, SIZES

    size = SIZES[name]
    with torch.device("meta"):
        model = RWKV(size.config())
    return {
        "path": name,
        "format": f"named size ({size.source})",
        "config": model.config,
        "parameters": model.num_parameters(),
    }


def _describe_multimodal(path) -> dict:
    """A multimodal checkpoint from its config.json and the tensor shapes in its weights file (nothing built)."""
    import json
    import math

    from safetensors import safe_open

    from mmrwkv.errors import CheckpointError
    from mmrwkv.rwkv import RWKVConfig, config_for

    meta = json.loads((path / "config.json").read_text())
    spec = dict(meta["backbone"])
    size = spec.pop("size", None)
    config = config_for(size, **spec) if size else RWKVConfig(**spec)
    weights = path / "model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except Exception as err:
        raise CheckpointError(f"{weights}: cannot read the weights ({err})") from err
    count = {part: sum(math.prod(s) for k, s in shapes.items() if k.startswith(part)) for part in ("backbone.",)}
    parts = [
        (f"{m} encoder", f"{e['name']} {e.get('kwargs') or ''}".strip()) for m, e in meta.get("encoders", {}).items()
    ]
    parts += [(f"{m} projector", p["kind"]) for m, p in meta.get("projectors", {}).items()]
    extra = [
        *parts,
        ("tokenizer", meta.get("tokenizer", "world")),
        ("placement", meta.get("placement", "inline")),
        ("all parameters", f"{sum(math.prod(s) for s in shapes.values()):,} (backbone, encoders, projectors)"),
    ]
    return {
        "path": str(path),
        "format": "mmrwkv multimodal (backbone below)",
        "config": config,
        "parameters": count["backbone."],
        "extra": extra,
    }


def run_info(args) -> int:
    from pathlib import Path

    from mmrwkv.checkpoint import describe
    from mmrwkv.multimodal import is_multimodal_checkpoint
    from mmrwkv.rwkv import SIZES

    named = args.checkpoint in SIZES and not Path(args.checkpoint).exists()
    if named:
        info = _describe_size(args.checkpoint)
    elif is_multimodal_checkpoint(args.checkpoint):
        info = _describe_multimodal(Path(args.checkpoint))
    else:
        info = describe(args.checkpoint)
    c = info["config"]
    lines = [
        ("path", info["path"]),
        ("format", info["format"]),
        ("generation", f"RWKV-{c.generation} (version {c.version})"),
        ("layers", c.n_layer),
        ("n_embd", c.n_embd),
        ("heads", f"{c.n_head} x {c.head_size}" if c.generation > 4 else "per channel"),
        ("vocab_size", c.vocab_size),
        ("dim_ffn", c.dim_ffn),
    ]
    if c.generation == 6:
        lines.append(("lora (maa, decay)", f"{c.dim_maa}, {c.dim_decay}"))
    if c.generation == 7:
        lines.append(("lora (w, a, v, g)", f"{c.dim_w}, {c.dim_a}, {c.dim_v}, {c.dim_g}"))
    n = info["parameters"]
    lines.append(("parameters", f"{n:,} ({n / 1e9:.3f} B)" if n >= 1e8 else f"{n:,} ({n / 1e6:.2f} M)"))
    if info.get("tuned_state") and info["format"] == "official" and c.generation not in (5, 6):
        # mmrwkv.checkpoint refuses these time_state keys on load (RWKV-7: the layout is not fixed)
        lines.append(("tuned state", f"time_state keys that loading refuses for RWKV-{c.generation} (see the error)"))
    elif info.get("tuned_state"):
        lines.append(("tuned state", "yes (state tuning: every sequence starts from it)"))
    lines += info.get("extra", [])
    for key, value in lines:
        print(f"{key:<18} {value}")
    return 0


def run_convert(args) -> int:
    from mmrwkv.checkpoint import convert

    out = convert(args.src, args.dst, dtype=_dtype(args.dtype), to=args.to)
    print(f"wrote {out}")
    return 0


def run_init(args) -> int:
    import torch

    from mmrwkv.checkpoint import save_official, save_rwkv
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(args.seed)
    model = RWKV(config_for(args.size))
    out = save_official(model, args.dst) if args.dst.endswith(".pth") else save_rwkv(model, args.dst)
    print(f"wrote {out} ({model.num_parameters():,} parameters)")
    return 0
