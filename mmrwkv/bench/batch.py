"""`mmrwkv bench batch`: batched RNN-mode decode on CPU, the rows stepped one at a time vs one batched step.

A batch's rows take the one-sequence step where that is the native CPU step (`mmrwkv.inference.engine`), so batched
greedy generation gives exactly the tokens of one-at-a-time generation; each row then reads the weights once per token.
This times, per batched token, that step ("rows": `RWKVStepper`) against the model's batched sequence-mode step
("batched": the model at (B, 1), one weight read for all rows, not exact in bf16), and whole greedy generations:
`generate_batch` vs `generate` one prompt after another. Random weights of a named size, batch sizes side by side,
rounds interleaved so the methods share the machine's noise; medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="v7-0.1b", help="model size (random weights)")
    parser.add_argument("--batch-sizes", default="2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="bf16,fp32", help="comma-separated, of fp32 and bf16")
    parser.add_argument("--tokens", type=int, default=4, help="timed steps (and generated tokens) per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


class _IdTokenizer:
    """Prompts are given as ids; generated tokens have no text (the bench counts time, not words)."""

    vocab_size = 0

    def decode_bytes(self, ids) -> bytes:
        return b""


def _options(args) -> tuple[list[int], list[torch.dtype]]:
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--batch-sizes {args.batch_sizes!r}: give comma-separated integers") from None
    unknown = [d for d in args.dtypes.split(",") if d not in _DTYPES]
    if unknown or any(b < 1 for b in sizes) or args.tokens < 1 or args.rounds < 1:
        raise SystemExit(
            f"bench batch: --dtypes {args.dtypes!r} (of fp32, bf16), --batch-sizes {args.batch_sizes!r}, "
            f"--tokens {args.tokens}, --rounds {args.rounds}: known dtypes and numbers >= 1"
        )
    return sizes, [_DTYPES[d] for d in args.dtypes.split(",")]


@torch.inference_mode()
def _steps(step, ids: torch.Tensor, state, n: int) -> list[float]:
    """Seconds of each of n steps after two untimed ones (they refill the caches the other methods evicted)."""
    for _ in range(2):
        _, state = step(ids, state)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        _, state = step(ids, state)
        times.append(time.perf_counter() - start)
    return times


def step_times(model, batch_size: int, tokens: int, rounds: int) -> dict[str, float]:
    """Median seconds per batched token: "rows" (RWKVStepper) and "batched" (the model at (B, 1))."""
    from mmrwkv.inference.stepper import RWKVStepper

    stepper = RWKVStepper(model)

    def batched(ids, state):
        return model(ids.view(-1, 1), state)

    ids = torch.arange(batch_size) + 65
    state = model.init_state(batch_size)
    times: dict[str, list[float]] = {"rows": [], "batched": []}
    for _ in range(rounds):
        times["rows"] += _steps(stepper, ids, state, tokens)
        times["batched"] += _steps(batched, ids, state, tokens)
    return {name: statistics.median(t) for name, t in times.items()}


def generation_times(model, batch_size: int, tokens: int, rounds: int) -> dict[str, float]:
    """Median seconds of a greedy generation of `tokens` tokens for `batch_size` prompts of different lengths:
    "generate_batch" and "one_at_a_time"."""
    from mmrwkv.inference.generate import SamplingConfig, generate, generate_batch

    prompts = [[65 + i] * (3 + 5 * i) for i in range(batch_size)]
    sampling, tokenizer = SamplingConfig(temperature=0, max_tokens=tokens, eos_ids=[]), _IdTokenizer()

    def one_at_a_time():
        for prompt in prompts:
            list(generate(model, tokenizer, prompt, sampling))

    runs = {
        "generate_batch": lambda: generate_batch(model, tokenizer, prompts, sampling),
        "one_at_a_time": one_at_a_time,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds + 1):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}  # the first round warms up


def _print(r: dict, tokens: int) -> None:
    step = f"per token: rows {r['rows_ms']:7.1f} ms  batched {r['batched_ms']:7.1f} ms  ({r['rows_vs_batched']:.2f}x)"
    gen = (f"{tokens} tokens: generate_batch {r['generate_batch_ms']:7.0f} ms  one at a time "
           f"{r['one_at_a_time_ms']:7.0f} ms  ({r['batch_vs_one_at_a_time']:.2f}x)")  # fmt: skip
    print(f"{r['dtype']:9s} B={r['batch']:<3d} {step} | {gen}", flush=True)


def run(args) -> int:
    from mmrwkv.bench.decode import random_model
    from mmrwkv.kernels import cpu as native

    sizes, dtypes = _options(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(native.route(), flush=True)
    try:
        base = random_model(args.size)
        for dtype in dtypes:
            model = base.to(dtype)
            for b in sizes:
                step = step_times(model, b, args.tokens, args.rounds)
                gen = generation_times(model, b, args.tokens, args.rounds)
                rows.append({"dtype": str(dtype).removeprefix("torch."), "batch": b, **{f"{k}_ms": v * 1e3 for k, v in
                             {**step, **gen}.items()}, "rows_vs_batched": step["rows"] / step["batched"],
                             "batch_vs_one_at_a_time": gen["generate_batch"] / gen["one_at_a_time"]})  # fmt: skip
                _print(rows[-1], args.tokens)
    finally:
        torch.set_num_threads(threads)
    summary = {"size": args.size, "threads": args.threads or threads, "native": native.enabled(),
               "route": native.route(), "rows": rows}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0
