"""`mmrwkv serve`: an OpenAI-compatible chat server for one model (`mmrwkv.serve`, `mmrwkv.serve_app`)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  mmrwkv serve runs/easy_vqa/all/final --port 8000
  mmrwkv serve RWKV-x070-World-0.1B.pth            # a text-only backbone
then any OpenAI client: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
images are sent inline (image_url with a data: URL), audio as input_audio parts; the server reads no files."""


def register(sub) -> None:
    """Add the `serve` subcommand."""
    p = sub.add_parser(
        "serve",
        help="serve one model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="multimodal checkpoint directory, or any backbone checkpoint")
    p.add_argument("--random-tiny", action="store_true", help="serve an untrained tiny model (for trying clients)")
    p.add_argument("--name", help="model id clients see (default: the checkpoint directory's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit in MiB")
    p.add_argument("--max-tokens", type=int, default=2048, help="largest max_tokens a request may ask for")
    p.add_argument("--max-in-flight", type=int, default=4, help="requests handled at once (more get 429)")
    p.add_argument("--max-conversations", type=int, default=64, help="conversation states kept for reuse")
    p.set_defaults(func=run)


def load_model(checkpoint: str | None, *, random_tiny: bool = False, device: str = "cpu"):
    """A MultimodalRWKV to serve: a multimodal checkpoint, a backbone (text only), or the demo's random tiny."""
    from pathlib import Path

    from mmrwkv.errors import ConfigError
    from mmrwkv.multimodal import MultimodalRWKV, is_multimodal_checkpoint

    if random_tiny:
        from mmrwkv.demos.common import build_random_tiny

        return build_random_tiny().to(device), "random-tiny"
    if checkpoint is None:
        raise ConfigError("mmrwkv serve: give a CHECKPOINT (or --random-tiny)")
    name = Path(checkpoint).resolve().name
    if is_multimodal_checkpoint(checkpoint):
        return MultimodalRWKV.load(checkpoint, map_location=device).eval(), name
    from mmrwkv.checkpoint import load_rwkv
    from mmrwkv.tokenizer import load_tokenizer

    backbone = load_rwkv(checkpoint, device=device).eval()
    tokenizer = load_tokenizer("world" if backbone.config.vocab_size == 65536 else str(Path(checkpoint)))
    return MultimodalRWKV(backbone, {}, {}, tokenizer).eval(), name


def run(args: argparse.Namespace) -> int:
    from mmrwkv.limits import bound_malloc_arenas
    from mmrwkv.serve import ChatServer, ServeLimits
    from mmrwkv.serve_app import run_server

    bound_malloc_arenas()
    model, name = load_model(args.checkpoint, random_tiny=args.random_tiny, device=args.device)
    limits = ServeLimits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_tokens=args.max_tokens,
        max_in_flight=args.max_in_flight,
        max_conversations=args.max_conversations,
    )
    run_server(ChatServer(model, args.name or name, limits), args.host, args.port)
    return 0
