"""`mmrwkv bench context`: per-token decode time and memory vs context length, RWKV-7 vs a KV-cache Transformer.

Both models have the same width, depth, head size and vocabulary, random weights, fp32, batch 1, CPU. RWKV
prefills each context for real (sequence mode, chunked kernel) and then decodes in RNN mode with its
constant-size state. The Transformer (transformers' Llama with a DynamicCache) gets a cache of random keys and
values of the context's length: its per-token cost depends on the cache length only, and a real 16k-token
prefill of quadratic attention would dominate the run. Each (model, context) pair keeps its own state or cache, all
filled before any timing; rounds of decode steps then visit every pair in turn, so the contexts share the machine's
noise; the first step of each visit is not timed (it refills the caches the other pairs evicted); the median step
counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contexts", default="100,1000,4000,16000", help="comma-separated context lengths")
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=8, help="decode steps per round (each step is timed)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--prefill-chunk", type=int, default=2048, help="tokens per sequence-mode prefill call")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/context.png"), help="plot (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def _rwkv(args):
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(0)
    model = RWKV(
        config_for(
            "v7-0.1b", n_layer=args.n_layer, n_embd=args.n_embd, head_size=args.head_size, vocab_size=args.vocab_size
        )
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return model


def _llama(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = args.n_embd // args.head_size
    config = LlamaConfig(
        hidden_size=args.n_embd,
        num_hidden_layers=args.n_layer,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=args.n_embd * 7 // 2,
        vocab_size=args.vocab_size,
        max_position_embeddings=1 << 20,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


class _RWKVRunner:
    """Real prefill to each context, then timed RNN-mode steps."""

    def __init__(self, model, chunk: int):
        from mmrwkv.inference.generate import stepper_for

        self.model, self.chunk, self.step = model, chunk, stepper_for(model)
        self.state, self.length, self.token = model.init_state(1), 0, torch.tensor([1])

    @torch.inference_mode()
    def grow_to(self, length: int) -> None:
        while self.length < length:
            n = min(self.chunk, length - self.length)
            ids = torch.randint(0, self.model.config.vocab_size, (1, n))
            logits, self.state = self.model(ids, self.state, last_only=True)
            self.length += n
            self.token = logits[0, -1].argmax().view(1)

    def time_steps(self, n: int) -> list[float]:
        times = []
        for _ in range(n + 1):
            start = time.perf_counter()
            logits, self.state = self.step(self.token, self.state)
            self.token = logits[0].argmax().view(1)
            times.append(time.perf_counter() - start)
        self.length += n + 1
        return times[1:]

    def nbytes(self) -> int:
        return self.state.nbytes


class _LlamaRunner:
    """A DynamicCache of random keys/values grown to each context, then timed cached decode steps."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model, self.cfg = model, model.config
        self.cache, self.token = DynamicCache(config=model.config), torch.tensor([[1]])

    @torch.inference_mode()
    def grow_to(self, length: int) -> None:
        missing = length - self.cache.get_seq_length()
        if missing <= 0:
            return
        heads, size = self.cfg.num_key_value_heads, self.cfg.hidden_size // self.cfg.num_attention_heads
        for layer in range(self.cfg.num_hidden_layers):
            keys, values = torch.randn(2, 1, heads, missing, size).unbind(0)
            self.cache.update(keys, values, layer)

    @torch.inference_mode()
    def time_steps(self, n: int) -> list[float]:
        times = []
        for _ in range(n + 1):
            start = time.perf_counter()
            out = self.model(input_ids=self.token, cache=self.cache, use_cache=True)
            self.token = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - start)
        return times[1:]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.keys, layer.values))


def _measure(factories: dict, contexts: list[int], steps: int, rounds: int) -> list[dict]:
    """Every (model, context) pair gets its own runner, filled to its context first; then each round times every
    pair in turn, so that all contexts see the same machine noise (a busy machine's slow minute would otherwise land
    on whichever context was being timed then)."""
    runners = {}
    for length in contexts:
        for name, factory in factories.items():
            runners[name, length] = runner = factory()
            runner.grow_to(length)
    times: dict[tuple, list[float]] = {key: [] for key in runners}
    visit_best: dict[tuple, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            visit = runner.time_steps(steps)
            times[key] += visit
            visit_best[key].append(min(visit))
    rows = []
    for length in contexts:
        row = {"context": length}
        for name in factories:
            row[f"{name}_ms"] = 1e3 * statistics.median(times[name, length])
            # the fastest step: the cost with the least interference from other processes
            row[f"{name}_min_ms"] = 1e3 * min(times[name, length])
            # the median over rounds of each visit's fastest step: robust to a busy machine's preemptions (a
            # time slice lost inside a step), which hit a few steps of a visit, not all of them
            row[f"{name}_visit_ms"] = 1e3 * statistics.median(visit_best[name, length])
            row[f"{name}_bytes"] = runners[name, length].nbytes()
        rows.append(row)
        print(
            f"context {length:>6}: rwkv {row['rwkv_ms']:7.2f} ms/tok, state {row['rwkv_bytes'] / 2**20:7.2f} MiB | "
            f"transformer {row['transformer_ms']:7.2f} ms/tok, KV cache {row['transformer_bytes'] / 2**20:8.2f} MiB",
            flush=True,
        )
    return rows


def run(args: argparse.Namespace) -> int:
    # Random weights drift into subnormal floats, which x86 handles far slower; trained weights rarely do.
    # The flag is process-wide: restore the default so callers (and tests) are not affected.
    torch.set_flush_denormal(True)
    try:
        return _run(args)
    finally:
        torch.set_flush_denormal(False)


def _run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    contexts = sorted(int(c) for c in args.contexts.split(","))
    if args.n_embd % args.head_size:
        raise SystemExit(f"--n-embd {args.n_embd} is not a multiple of --head-size {args.head_size}")
    print(
        f"decode vs context: L{args.n_layer} C{args.n_embd} head {args.head_size} V{args.vocab_size}, fp32, batch 1, "
        f"CPU threads {torch.get_num_threads()}; median of {args.rounds} rounds x {args.steps} timed steps"
    )
    from mmrwkv.inference.stepper import column_major_linears
    from mmrwkv.kernels import cpu as native

    print(native.route(), flush=True)
    rwkv, llama = _rwkv(args), _llama(args)
    # the faster batch-1 weight layout, for both models alike
    column_major_linears(rwkv)
    column_major_linears(llama)
    factories = {"rwkv": lambda: _RWKVRunner(rwkv, args.prefill_chunk), "transformer": lambda: _LlamaRunner(llama)}
    rows = _measure(factories, contexts, args.steps, args.rounds)
    _summary(rows)
    _plot(rows, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "func"}, "rows": rows}, indent=2)
        )
    return 0


def _summary(rows: list[dict]) -> None:
    first, last = rows[0], rows[-1]
    span = f"{last['context']} vs {first['context']}"
    for key, label in (("ms", "median"), ("visit_ms", "median of each round's fastest"), ("min_ms", "fastest")):
        print(
            f"per-token time {span} ({label} step): rwkv x{last[f'rwkv_{key}'] / first[f'rwkv_{key}']:.2f}, "
            f"transformer x{last[f'transformer_{key}'] / first[f'transformer_{key}']:.2f}"
        )
    print(
        f"at {last['context']}: transformer/rwkv time x{last['transformer_ms'] / last['rwkv_ms']:.2f}, "
        f"KV cache/state bytes x{last['transformer_bytes'] / last['rwkv_bytes']:.1f}; "
        f"rwkv state constant: {len({r['rwkv_bytes'] for r in rows}) == 1}"
    )


def _plot(rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = [r["context"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name, label in (("rwkv", "RWKV-7 (state)"), ("transformer", "Llama (KV cache)")):
        ax_t.plot(ctx, [r[f"{name}_ms"] for r in rows], marker="o", label=label)
        ax_m.plot(ctx, [r[f"{name}_bytes"] / 2**20 for r in rows], marker="o", label=label)
    for ax, ylabel in ((ax_t, "decode ms / token"), (ax_m, "state / KV cache MiB")):
        ax.set_xscale("log")
        ax.set_xlabel("context tokens")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_m.set_yscale("log")
    fig.suptitle(f"decode vs context, L{args.n_layer} C{args.n_embd}, fp32 CPU batch 1")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"plot: {args.out}")
