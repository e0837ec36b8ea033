"""`mmrwkv generate`: stream a model's continuation of a prompt to stdout, one flush per text piece."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from mmrwkv.errors import CheckpointError, TokenizerError


def register(sub) -> None:
    """Add the `generate` subcommand."""
    parser = sub.add_parser("generate", help="stream generated text (RNN mode) from a checkpoint")
    parser.add_argument("--checkpoint", required=True, help="our checkpoint directory or an official .pth")
    parser.add_argument("--prompt", required=True, help="prompt text; '-' reads it from stdin")
    parser.add_argument(
        "--tokenizer", default=None, help="'world', a tokenizer.json or World vocab .txt (default: from the checkpoint)"
    )
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="weight dtype")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable; multimodal checkpoint)")
    parser.add_argument("--audio", action="append", default=[], help="audio file (repeatable; multimodal checkpoint)")
    add_sampling_arguments(parser)
    parser.set_defaults(func=run)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every `SamplingConfig` field (shared with other generating commands)."""
    g = parser.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--penalty-decay", type=float, default=0.996)
    g.add_argument("--max-tokens", type=int, default=200)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable); never printed")
    g.add_argument("--seed", type=int, default=None)


def sampling_from_args(args: argparse.Namespace):
    """The `SamplingConfig` the flags describe."""
    from mmrwkv.inference.generate import SamplingConfig

    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        penalty_decay=args.penalty_decay,
        max_tokens=args.max_tokens,
        stop=[_unescape(s) for s in args.stop],
        seed=args.seed,
    )


def _unescape(text: str) -> str:
    """Shell-typed `\\n` and `\\t` in a stop string mean newline and tab (so `--stop '\\n\\n'` works)."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def tokenizer_spec(checkpoint: str | Path, explicit: str | None, vocab_size: int) -> str:
    """Which tokenizer a checkpoint uses: `explicit` > config.json "tokenizer" > a tokenizer.json beside the
    weights > "world" for a 65536-token vocabulary; otherwise an error asking for --tokenizer."""
    if explicit:
        return explicit
    path = Path(checkpoint)
    if path.is_dir():
        meta = json.loads((path / "config.json").read_text())
        if isinstance(meta.get("tokenizer"), str):
            spec = meta["tokenizer"]
            return spec if spec == "world" or Path(spec).is_absolute() else str(path / spec)
        if (path / "tokenizer.json").is_file():
            return str(path / "tokenizer.json")
    if vocab_size == 65536:
        return "world"
    raise TokenizerError(
        f"{checkpoint}: cannot tell the tokenizer of a {vocab_size}-token vocabulary; pass --tokenizer"
    )


def load_for_generation(args: argparse.Namespace):
    """(model, tokenizer) from --checkpoint, --tokenizer, --dtype, --device."""
    import torch

    from mmrwkv.checkpoint import load_rwkv
    from mmrwkv.tokenizer import load_tokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.dtype]
    from mmrwkv.inference.stepper import column_major_linears

    model = load_rwkv(args.checkpoint, dtype=dtype, device=args.device).eval()
    # inference only: the weight layout that batch-1 decoding streams fastest (no extra memory)
    column_major_linears(model)
    tokenizer = load_tokenizer(tokenizer_spec(args.checkpoint, args.tokenizer, model.config.vocab_size))
    # text ids must have rows; the reserved ids (media, roles) may lie past them: a Hugging Face file that fills the
    # model's vocabulary (the Pile models' 20B_tokenizer.json, 50277 ids) gets its reserved tokens appended
    reserved = tokenizer.special.ids()
    text_ids = max((i for i in range(tokenizer.vocab_size) if i not in reserved), default=-1) + 1
    if text_ids > model.config.vocab_size:
        raise TokenizerError(
            f"tokenizer has {text_ids} text ids but {args.checkpoint} embeds only {model.config.vocab_size}"
        )
    return model, tokenizer


def text_pieces(args: argparse.Namespace, model, tokenizer, sampling) -> Iterator[str]:
    """The generated pieces for a text prompt (a multimodal command can replace this step)."""
    from mmrwkv.inference.generate import generate

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        ids = tokenizer.encode(prompt)
    except TokenizerError as err:
        raise TokenizerError(f"--prompt: {err} (bytes that are not UTF-8 in the argument?)") from err
    if not ids:
        raise TokenizerError("--prompt: empty; the model needs at least one token to continue")
    return generate(model, tokenizer, ids, sampling)


def stream_to(pieces: Iterator[str], out=None) -> str:
    """Write each piece as it comes, flushing so a terminal or pipe sees it at once; return the whole text."""
    out = out or sys.stdout
    text = []
    for piece in pieces:
        out.write(piece)
        out.flush()
        text.append(piece)
    out.write("\n")
    out.flush()
    return "".join(text)


def run(args: argparse.Namespace) -> int:
    from mmrwkv.multimodal import is_multimodal_checkpoint

    if args.image or args.audio or is_multimodal_checkpoint(args.checkpoint):
        from mmrwkv.inference.session import answer_once

        if Path(args.checkpoint).exists() and not is_multimodal_checkpoint(args.checkpoint):
            raise CheckpointError(
                f"{args.checkpoint}: --image / --audio need a multimodal checkpoint (a directory a recipe trains, "
                "e.g. runs/easy_vqa/all/final); this one is a text-only RWKV model: drop --image / --audio"
            )

        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        stream_to(
            answer_once(
                args.checkpoint,
                prompt,
                images=args.image,
                audio=args.audio,
                sampling=sampling_from_args(args),
                device=args.device,
            )
        )
        return 0
    model, tokenizer = load_for_generation(args)
    stream_to(text_pieces(args, model, tokenizer, sampling_from_args(args)))
    return 0
