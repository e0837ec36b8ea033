"""`mmrwkv demo`: the Gradio chat (default) or the caption/VQA side-by-side page, bound to 127.0.0.1, offline."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="launch a Gradio demo: streaming multimodal chat, or caption/VQA side by side")
    p.add_argument(
        "--app",
        choices=["chat", "caption", "stream"],
        default="chat",
        help="which page (default: chat; stream: live microphone and webcam into the RNN state)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="DIR",
        help="multimodal checkpoint directory (repeatable; default: the newest under --runs-dir)",
    )
    p.add_argument("--runs-dir", default="runs", help="where `make run` leaves checkpoints (default: runs)")
    p.add_argument(
        "--allow-checkpoint-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="let clients name any checkpoint inside DIR in the path box (repeatable; default: only the listed ones)",
    )
    p.add_argument("--random-tiny", action="store_true", help="offer an untrained tiny model (for trying the UI)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--max-file-mb", type=float, default=10.0, help="upload size limit in MiB")
    p.add_argument("--session-ttl", type=float, default=1800.0, help="seconds before an idle chat session is freed")
    p.add_argument("--max-sessions", type=int, default=64, help="idle chat sessions kept at most")
    p.add_argument("--concurrency", type=int, default=4, help="answers generated at the same time")
    p.set_defaults(func=run)


def registry_for(args: argparse.Namespace):
    """The demo's model registry: it serves the checkpoints the demo starts with (--checkpoint and those under
    --runs-dir) and those inside each --allow-checkpoint-dir, nothing else."""
    from mmrwkv.demos.common import ModelRegistry, find_checkpoints
    from mmrwkv.errors import CheckpointError

    for folder in args.allow_checkpoint_dir:
        if not os.path.isdir(folder):
            raise CheckpointError(f"--allow-checkpoint-dir {folder}: not a directory")
    served = list(args.checkpoint) + find_checkpoints(args.runs_dir)
    return ModelRegistry(
        device=args.device, allow_random=args.random_tiny, serve=served, allow_dirs=args.allow_checkpoint_dir
    )


def build(args: argparse.Namespace):
    """The Gradio Blocks the flags describe (not launched)."""
    from mmrwkv.checkpoint_files import missing_checkpoint
    from mmrwkv.errors import CheckpointError
    from mmrwkv.multimodal import is_multimodal_checkpoint

    for path in args.checkpoint:
        if not os.path.exists(path):
            raise missing_checkpoint(path, "checkpoint directory")
        if not is_multimodal_checkpoint(path):
            raise CheckpointError(
                f"{path}: not a multimodal mmrwkv checkpoint directory (config.json of kind "
                f"'multimodal' + model.safetensors)"
            )
    registry = registry_for(args)
    max_bytes = int(args.max_file_mb * 2**20)
    if args.app == "stream":
        from mmrwkv.demos.stream import StreamDemo, StreamOptions, build_stream_app

        options = StreamOptions(
            checkpoint=args.checkpoint[0] if args.checkpoint else None,
            runs_dir=args.runs_dir,
            random_tiny=args.random_tiny,
        )
        return build_stream_app(options, StreamDemo(options, registry=registry))
    if args.app == "caption":
        from mmrwkv.demos.caption_vqa import CaptionDemo, CaptionOptions, build_caption_app

        options = CaptionOptions(
            checkpoints=tuple(args.checkpoint),
            runs_dir=args.runs_dir,
            random_tiny=args.random_tiny,
            max_file_bytes=max_bytes,
            concurrency=args.concurrency,
            allow_dirs=tuple(args.allow_checkpoint_dir),
        )
        return build_caption_app(options, CaptionDemo(options, registry=registry))
    from mmrwkv.demos.chat import ChatDemo, ChatOptions, build_chat_app

    options = ChatOptions(
        checkpoint=args.checkpoint[0] if args.checkpoint else None,
        runs_dir=args.runs_dir,
        random_tiny=args.random_tiny,
        max_file_bytes=max_bytes,
        session_ttl_s=args.session_ttl,
        max_sessions=args.max_sessions,
        concurrency=args.concurrency,
        allow_dirs=tuple(args.allow_checkpoint_dir),
    )
    return build_chat_app(options, ChatDemo(options, registry=registry))


def run(args: argparse.Namespace) -> int:
    """Build the page, say where it is (and how to get a checkpoint when there is none), serve until Ctrl-C."""
    from mmrwkv.demos.common import NO_CHECKPOINT_HELP, find_checkpoints, launch_app
    from mmrwkv.limits import bound_malloc_arenas

    bound_malloc_arenas()
    app = build(args)
    if not (args.checkpoint or args.random_tiny or find_checkpoints(args.runs_dir)):
        print(NO_CHECKPOINT_HELP.format(runs=args.runs_dir).replace("`", ""), file=sys.stderr)
    launch_app(app, host=args.host, port=args.port, max_file_bytes=int(args.max_file_mb * 2**20), block=True)
    return 0
