"""`mmrwkv bench demo`: time to first token and streaming tokens/s of the chat demo, new image vs cached image.

The model is the default checkpoint (the newest `final` under runs/, what `make run` leaves) or, when there is
none, a random model of the default recipe's shape (its BPE tokenizer trained on a few lines in a temp dir).
Each repeat sends a message with a NEW image (a fresh PNG) in a new session, then resets the chat and sends the
same image and question again, which the session's prefix cache serves. Answers are exactly
`--answer-tokens` greedy tokens (no stop strings, no end token), so repeats differ only in the prefill.

Two paths are timed: the demo's handler (`ChatDemo.respond`: upload check, image decode, prefill, decode
steps, chat messages) and, unless `--no-server`, the launched page through gradio_client (adds HTTP and the
queue). Time to first token = from sending until the first update that shows reply text.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

QUESTION = "What shape is in the image?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model choice, answer length, repeats (defaults finish in about a minute on 2 CPU cores)."""
    parser.add_argument("--checkpoint", default=None, help="multimodal checkpoint (default: newest under --runs-dir)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--recipe", default="recipes/easy_vqa.yaml", help="shape of the random model without one")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for the random model, e.g. encoders.image.grid=8 (repeatable)")
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="new-image / cached-image pairs (median)")
    parser.add_argument("--image-side", type=int, default=256, help="side of the uploaded PNG in pixels")
    parser.add_argument("--no-server", action="store_true", help="time the handler only, no Gradio server")
    parser.add_argument("--seed", type=int, default=0)


def default_model(args: argparse.Namespace, workdir: Path):
    """(model, description): the checkpoint, the newest under runs/, or a random model of the recipe's shape."""
    from mmrwkv.demos.common import find_checkpoints
    from mmrwkv.multimodal import MultimodalRWKV

    path = args.checkpoint or next(iter(find_checkpoints(args.runs_dir)), None)
    if path:
        return MultimodalRWKV.load(path).eval(), path
    model = random_recipe_model(args.recipe, workdir, seed=args.seed, overrides=args.override)
    return model, f"random model shaped like {args.recipe} {' '.join(args.override)}".strip()


def random_recipe_model(recipe: str, workdir: Path, *, seed: int = 0, overrides: list[str] | None = None):
    """A random model built as the recipe builds it; a "bpe" tokenizer is trained on template lines."""
    import torch

    from mmrwkv.chat import ROLES
    from mmrwkv.config import load_config
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import load_tokenizer, train_bpe
    from mmrwkv.training.build import model_config

    cfg = load_config(recipe, overrides or [])
    spec = cfg.model.tokenizer
    if spec == "bpe":
        spec = str(workdir / "tokenizer.json")
        lines = [f"{role}: {QUESTION} a red circle, a blue square" for role in ROLES.values()] * 50
        train_bpe(lines, cfg.model.bpe_vocab_size, spec)
    torch.manual_seed(seed)
    return MultimodalRWKV.from_config(model_config(cfg, spec, load_tokenizer(spec).vocab_size)).eval()


def write_png(path: Path, seed: int, side: int) -> str:
    """A random RGB PNG (a "new image" nobody has sent before)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def make_demo(model, answer_tokens: int):
    """A ChatDemo over `model` whose answers are exactly `answer_tokens` greedy tokens."""
    from mmrwkv.demos.chat import ChatDemo, ChatOptions
    from mmrwkv.demos.common import ModelRegistry
    from mmrwkv.generate import SamplingConfig

    class FixedLength(ChatDemo):
        def sampling(self, temperature, top_p, max_tokens):
            return SamplingConfig(temperature=0, max_tokens=answer_tokens, stop=[], eos_ids=[])

    registry = ModelRegistry()
    registry.add("bench", model)
    return FixedLength(ChatOptions(checkpoint="bench", concurrency=1), registry=registry)


def _timed(updates, reply_of) -> tuple[float, float]:
    """(seconds to the first update showing reply text, seconds from it to the last update)."""
    start = time.perf_counter()
    first = None
    for update in updates:
        if first is None and reply_of(update):
            first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the demo streamed no reply text")
    return first - start, end - first


def _reply(messages) -> str:
    last = messages[-1] if isinstance(messages, list) and messages else {}
    content = last.get("content") if last.get("role") == "assistant" else ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) and not content.startswith("⚠️") else ""


def measure_handler(demo, images: list[str], repeats: int) -> dict:
    """Per repeat: (ttft, stream seconds) for a new image in a new session and for the same image cached."""
    new, cached = [], []
    for r in range(repeats):
        sid = f"bench-handler-{r}"
        message = {"text": QUESTION, "files": [images[r]]}
        for sink in (new, cached):
            demo.reset(sid)
            sink.append(_timed(demo.respond(message, "bench", "", 0.0, 1.0, 1, sid), _reply))
    return {"new": new, "cached": cached}


def measure_server(demo, images: list[str], repeats: int) -> dict:
    """The same pairs through a launched page and gradio_client (one client = one session per repeat)."""
    from gradio_client import Client, handle_file

    from mmrwkv.demos.chat import build_chat_app
    from mmrwkv.demos.common import free_port, launch_app

    app = build_chat_app(demo.options, demo)
    port = free_port()
    launch_app(app, port=port, block=False)
    new, cached = [], []
    try:
        for r in range(repeats):
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            for sink in (new, cached):
                client.predict(api_name="/reset")
                message = {"text": QUESTION, "files": [handle_file(images[r])]}
                job = client.submit(message, "bench", "", 0.0, 1.0, 1, api_name="/chat")
                sink.append(_timed(job, _reply))
            client.close()
    finally:
        app.close()
    return {"new": new, "cached": cached}


def _summary(runs: list[tuple[float, float]], answer_tokens: int) -> tuple[float, float, float]:
    """(median ttft seconds, best ttft seconds, median tokens/s after the first token).

    The best of the repeats is the steadiest figure on a shared, busy machine; the median is also shown.
    """
    ttft = [t for t, _ in runs]
    rate = statistics.median((answer_tokens - 1) / s for _, s in runs if s > 0)
    return statistics.median(ttft), min(ttft), rate


def run(args: argparse.Namespace) -> int:
    """Print time to first token and tokens/s, new vs cached image, for the handler and the server."""
    import torch

    with tempfile.TemporaryDirectory(prefix="mmrwkv-bench-demo-") as tmp:
        workdir = Path(tmp)
        model, label = default_model(args, workdir)
        images = [write_png(workdir / f"new{i}.png", args.seed + i, args.image_side) for i in range(args.repeats + 1)]
        demo = make_demo(model, args.answer_tokens)
        # one untimed turn so lazy initialisation is not charged to the first repeat
        measure_handler(demo, images[-1:], 1)
        results = {"handler": measure_handler(demo, images, args.repeats)}
        if not args.no_server:
            results["server"] = measure_server(demo, images, args.repeats)
    print(f"demo bench: {label}; {args.image_side}px PNG uploads, {args.answer_tokens}-token greedy answers, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads")
    print(f"{'path':<8} {'image':<7} {'first token ms (median)':>24} {'(best)':>8} {'tokens/s':>9}")
    for path, r in results.items():
        new, hit = (_summary(r[k], args.answer_tokens) for k in ("new", "cached"))
        for name, (med, best, rate) in (("new", new), ("cached", hit)):
            print(f"{path:<8} {name:<7} {med * 1e3:>24.1f} {best * 1e3:>8.1f} {rate:>9.1f}")
        print(f"{path:<8} cached / new first-token time: median {hit[0] / new[0]:.2f}x, best {hit[1] / new[1]:.2f}x "
              f"(target <= 0.3)")
    return 0
