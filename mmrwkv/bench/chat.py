"""`mmrwkv bench chat`: multi-turn chat latency with state reuse, and the image prefix cache.

Three measurements on a random model (v7 backbone, tiny_cnn image encoder; flags for sizes):
- a chat of `--turns` turns about one image with `ChatSession` (turn N prefills only its new tokens), beside a
  baseline that re-runs the whole history (image included) from an empty state at every turn;
- the cost of a second question about an image whose prefix is in the `PrefixCache`, against the first.
Every answer is exactly `--answer-tokens` greedy tokens (no stop strings), so turns differ only in prefill.
Times are wall clock and this process's CPU time (both threads); on a shared machine the CPU time is the
steadier figure, and the ratios are printed for both.
"""

from __future__ import annotations

import argparse
import io
import time

QUESTIONS = (
    "What is in the picture?",
    "What colour is it?",
    "Is there anything on the left?",
    "How many objects are there?",
    "Describe the background.",
    "What happens next?",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Size and length flags (defaults run in about a minute on 2 CPU cores)."""
    parser.add_argument("--turns", type=int, default=20, help="turns in the chat about one image")
    parser.add_argument("--layers", type=int, default=4, help="backbone layers")
    parser.add_argument("--embd", type=int, default=128, help="backbone width C")
    parser.add_argument("--head-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64, help="tiny_cnn input side in pixels")
    parser.add_argument("--grid", type=int, default=8, help="tiny_cnn grid side: grid**2 image tokens")
    parser.add_argument("--answer-tokens", type=int, default=8, help="tokens generated per answer")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (the fastest counts)")
    parser.add_argument("--tokenizer", default="world", help="'world' or a tokenizer.json path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this run (1 keeps CPU times honest on a busy machine)",
    )


def build_model(args: argparse.Namespace):
    """A random multimodal v7 model of the flag sizes and tokenizer."""
    import torch

    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import load_tokenizer

    torch.manual_seed(args.seed)
    config = {
        "backbone": {
            "size": "v7-tiny",
            "n_layer": args.layers,
            "n_embd": args.embd,
            "head_size": args.head_size,
            "vocab_size": load_tokenizer(args.tokenizer).vocab_size,
        },
        "tokenizer": args.tokenizer,
        "encoders": {
            "image": {"name": "tiny_cnn", "kwargs": {"image_size": args.image_size, "width": 64, "grid": args.grid}}
        },
        "projectors": {"image": {"kind": "mlp2x_gelu"}},
        "placement": "first",
    }
    return MultimodalRWKV.from_config(config).eval()


def random_png(seed: int, side: int = 96) -> bytes:
    """A random RGB image, PNG-encoded, so the real media loading path runs."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _sampling(args: argparse.Namespace):
    from mmrwkv.inference.generate import SamplingConfig

    return SamplingConfig(temperature=0, max_tokens=args.answer_tokens, stop=[], eos_ids=[])


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, cpu) seconds since `start`."""
    now = _clock()
    return now[0] - start[0], now[1] - start[1]


def _timed_turn(session, question: str, images: list) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, cpu) seconds until the prefill is done, (wall, cpu) seconds for the whole turn)."""
    start = _clock()
    pieces = session.ask(question, images=images)
    prefilled = _since(start)
    "".join(pieces)
    return prefilled, _since(start)


def chat_with_state_reuse(model, image: bytes, args: argparse.Namespace):
    """Per-turn (wall, cpu) seconds of a ChatSession chat (each the minimum over `--repeats` forks of the
    session), per-turn prefilled tokens, and the session (its turns feed the baseline)."""
    from mmrwkv.inference.session import ChatSession

    session = ChatSession(model, sampling=_sampling(args))
    times, tokens = [], []
    for turn in range(args.turns):
        runs = []
        for _ in range(args.repeats):
            fork = session.fork()
            runs.append(_timed_turn(fork, QUESTIONS[turn % len(QUESTIONS)], [image] if turn == 0 else [])[1])
        tokens.append(fork.prefill_tokens - session.prefill_tokens)
        # greedy answers: every fork holds the same conversation, so any of them continues the chat
        session = fork
        times.append(_fastest(runs))
    return times, tokens, session


def _fastest(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Per clock minimum: the run least disturbed by other work on the machine."""
    return min(r[0] for r in runs), min(r[1] for r in runs)


def chat_rerunning_history(model, turns: list, args: argparse.Namespace) -> tuple[list[float], list[int]]:
    """Per-turn (wall, cpu) seconds (minimum over `--repeats`) when every turn prefills the whole history from an
    empty state; prompt lengths."""
    from mmrwkv.data.template import ChatTemplate

    template = ChatTemplate.for_model(model)
    times, lengths = [], []
    for turn in range(args.turns):
        runs = [_rerun_turn(model, template, turns[: 2 * turn + 1], args) for _ in range(args.repeats)]
        times.append(_fastest([r[0] for r in runs]))
        lengths.append(runs[0][1])
    return times, lengths


def _rerun_turn(model, template, turns: list, args: argparse.Namespace) -> tuple[tuple[float, float], int]:
    import torch

    from mmrwkv.inference.generate import sample_stream

    start = _clock()
    enc = template.encode_turns(turns)
    with torch.inference_mode():
        logits, state = model(torch.tensor([enc.ids]), enc.media, last_only=True)
    "".join(sample_stream(model.backbone, model.tokenizer, logits[0, -1], state, _sampling(args)))
    return _since(start), len(enc.ids)


def cached_image_costs(model, image: bytes, args: argparse.Namespace) -> dict:
    """Fastest (prefill, turn) CPU seconds of a first question about one image, a second question about it, and the
    second question again, with a PrefixCache (a new one per repeat)."""
    from mmrwkv.inference.prefix_cache import PrefixCache
    from mmrwkv.inference.session import ChatSession

    calls: list[int] = []
    hook = model.encoders["image"].register_forward_hook(lambda *_: calls.append(1))
    runs: dict[str, list] = {"first": [], "second": [], "again": []}
    tokens, prompts = [], []
    try:
        for _ in range(args.repeats):
            session = ChatSession(model, cache=PrefixCache(), sampling=_sampling(args))
            for name, question in zip(runs, (QUESTIONS[0], QUESTIONS[1], QUESTIONS[1]), strict=True):
                session.reset()
                before = session.prefill_tokens
                runs[name].append(_timed_turn(session, question, [image]))
                tokens.append(session.prefill_tokens - before)
                prompts.append(len(session.history.ids) - args.answer_tokens)
    finally:
        hook.remove()
    best = {name: tuple(min(t[i][1] for t in r) for i in (0, 1)) for name, r in runs.items()}
    return {
        **best,
        "encoder_calls": len(calls) // args.repeats,
        "prefill_tokens": tokens[:3],
        "prompt_tokens": prompts[:3],
    }


def measure(args: argparse.Namespace) -> dict:
    """Run the three measurements; a dict of per-turn times, prompt lengths and cache costs."""
    from mmrwkv.inference.engine import native_prefill_max

    model = build_model(args)
    image = random_png(args.seed)
    # one untimed turn so lazy initialisation is not charged to turn 1
    chat_with_state_reuse(model, image, argparse.Namespace(**{**vars(args), "turns": 1, "repeats": 1}))
    reuse, reuse_tokens, session = chat_with_state_reuse(model, image, args)
    rerun, lengths = chat_rerunning_history(model, session.turns, args)
    return {
        "reuse": reuse,
        "reuse_tokens": reuse_tokens,
        "rerun": rerun,
        "history_tokens": lengths,
        "image_tokens": model.tokens_per_item("image", model.preprocess("image", image)),
        "cache": cached_image_costs(model, image, args),
        "short_max": native_prefill_max(model.backbone),
    }


def run(args: argparse.Namespace) -> int:
    """Print the side-by-side table and the ratios against their targets."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mmrwkv.kernels import cpu as native

    print(native.route(), flush=True)
    r = measure(args)
    print(
        f"chat bench: random v7 L{args.layers} C{args.embd}, tiny_cnn {args.image_size}px -> {r['image_tokens']} "
        f"image tokens, {args.answer_tokens}-token greedy answers, {torch.get_num_threads()} threads; pieces of "
        f"up to {r['short_max']} tokens prefill natively token by token (the engine's fixed rule)"
    )
    _print_turns(r)
    _print_cache(r["cache"])
    return 0


def _print_turns(r: dict) -> None:
    print(f"{'turn':>4} {'state reuse ms wall/cpu':>24} {'tokens':>7} {'re-run history ms wall/cpu':>27} {'tokens':>7}")
    rows = zip(r["reuse"], r["reuse_tokens"], r["rerun"], r["history_tokens"], strict=True)
    for i, (a, na, b, nb) in enumerate(rows):
        reuse, rerun = f"{a[0] * 1e3:>14.1f} /{a[1] * 1e3:>8.1f}", f"{b[0] * 1e3:>17.1f} /{b[1] * 1e3:>8.1f}"
        print(f"{i + 1:>4} {reuse} {na:>7} {rerun} {nb:>7}")
    last = len(r["reuse"]) - 1
    for k, clock in enumerate(("wall", "cpu")):
        print(
            f"turn {last + 1} / turn 1 ({clock}): state reuse {r['reuse'][last][k] / r['reuse'][0][k]:.2f}x "
            f"(target <= 1.2), re-run history {r['rerun'][last][k] / r['rerun'][0][k]:.2f}x"
        )


def _print_cache(c: dict) -> None:
    first, second, again = c["first"], c["second"], c["again"]
    print(
        f"prefix cache, same image (cpu ms): first prefill {first[0] * 1e3:.1f} (turn {first[1] * 1e3:.1f}), "
        f"second question {second[0] * 1e3:.1f} (turn {second[1] * 1e3:.1f}), second question again "
        f"{again[0] * 1e3:.1f} (turn {again[1] * 1e3:.1f})"
    )
    print(
        f"second / first: prefill ratio {second[0] / first[0]:.2f}x (target <= 0.3), turn ratio "
        f"{second[1] / first[1]:.2f}x; same question again: prefill ratio {again[0] / first[0]:.2f}x; encoder "
        f"calls per three questions {c['encoder_calls']}; prefilled tokens of the prompt: "
        + ", ".join(f"{n} of {p}" for n, p in zip(c["prefill_tokens"], c["prompt_tokens"], strict=True))
    )
