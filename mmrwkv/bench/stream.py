"""`mmrwkv bench stream`: an hour of simulated live audio into the RNN state vs a Transformer over the whole stream.

A microphone is simulated: chunks of `--chunk-s` seconds of a generated signal arrive at stream time, processed as
fast as possible (a simulated clock: no waiting), so the real-time factor (processing seconds per audio second) says
how much faster than real time each side keeps up. Both sides share one audio encoder and projector (tiny_whisper,
random weights): every `--window-s` window becomes the same projected tokens. RWKV-7 feeds them into its constant-size
state (`mmrwkv.inference.stream.StreamSession`); a Llama of the same width, depth, head size and vocabulary
(transformers, random weights) appends them to its KV cache and attends over every stream token so far. The sides run
at the same time, each in its own process, so each one's resident memory (RSS) is its own; each computes the last
token's logits per window, as a session that may be asked at any moment has to.

Per minute of stream time: the per-window time in CPU seconds of the process (one torch thread), its 10th percentile
(the window's own cost: on a shared machine the median moves from minute to minute with the other processes'
load, the low decile far less) and median, the median wall time, the real-time factor, the RSS at the minute's end
and the state / KV cache bytes. The flatness verdict compares minute 1 with the last minute on the 10th percentile
and the RSS.

Notation: C width, L layers, V vocabulary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated stream length")
    parser.add_argument("--window-s", type=float, default=1.0, help="audio seconds per encoded window")
    parser.add_argument("--chunk-s", type=float, default=0.25, help="seconds per simulated microphone chunk")
    parser.add_argument("--minute-s", type=float, default=60.0, help="stream seconds per reported row")
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary (both models' head)")
    parser.add_argument("--reduction", default="avgpool:10", help="audio projector reduction (tokens per window)")
    parser.add_argument("--sides", default="rwkv,transformer", help="which sides to run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/stream.png"), help="plot (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def build_model(args: argparse.Namespace, tokenizer_dir: Path):
    """The tiny_whisper + RWKV-7 model both sides take their encoder and projector from (seeded)."""
    from mmrwkv.multimodal import MultimodalRWKV

    path = tokenizer_dir / "tokenizer.json"
    torch.manual_seed(0)
    config = {
        "backbone": {
            "size": "v7-0.1b",
            "n_layer": args.n_layer,
            "n_embd": args.n_embd,
            "head_size": args.head_size,
            "vocab_size": args.vocab_size,
        },
        "tokenizer": str(path),
        "encoders": {"audio": {"name": "tiny_whisper", "kwargs": {"max_seconds": 4 * args.window_s}}},
        "projectors": {"audio": {"kind": "mlp2x_gelu", "kwargs": {"reduction": args.reduction}}},
        "placement": "inline",
    }
    model = MultimodalRWKV.from_config(config).eval()
    with torch.no_grad():  # a fresh RWKV-7 has zero matrices (its init); random ones make the work real
        for p in model.backbone.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return model


def microphone(seconds: float, chunk_s: float, rate: int):
    """Chunks of a generated signal (a tone that changes every second, faint noise), as a microphone sends them."""
    rng = np.random.default_rng(0)
    n = int(round(chunk_s * rate))
    t0 = 0
    while t0 < seconds * rate:
        t = np.arange(t0, t0 + n) / rate
        freq = 300.0 + 100.0 * (np.floor(t) % 12)
        yield (0.3 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.01, n)).astype(np.float32)
        t0 += n


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RWKVSide:
    """The stream session: windows into the constant-size state."""

    def __init__(self, model, window_s: float):
        from mmrwkv.inference.stream import StreamSession

        self.session = StreamSession(model, window_s=window_s)

    def feed(self, chunk: np.ndarray) -> int:
        return self.session.feed(audio=chunk)

    def restart(self) -> None:
        self.session.reset()

    def nbytes(self) -> int:
        return self.session.state_bytes


class TransformerSide:
    """The same windows' projected tokens appended to a Llama's KV cache, attending over the whole stream."""

    def __init__(self, model, window_s: float, args: argparse.Namespace):
        from transformers import DynamicCache

        from mmrwkv.bench.context import _llama

        # the Llama of `mmrwkv bench context`: same width, depth, heads and vocabulary as the RWKV side
        self.llama = _llama(args)
        self.model, self.cache = model, DynamicCache(config=self.llama.config)
        self.encoder = model.encoders["audio"]
        self.per = int(round(window_s * self.encoder.sample_rate))
        self.buffer = np.zeros(0, dtype=np.float32)

    @torch.inference_mode()
    def feed(self, chunk: np.ndarray) -> int:
        self.buffer = np.concatenate([self.buffer, chunk])
        n = 0
        while self.buffer.shape[0] >= self.per:
            window, self.buffer = self.buffer[: self.per], self.buffer[self.per :]
            feats = self.encoder.features(torch.from_numpy(window))
            x = self.model.encode_media("audio", [feats]).unsqueeze(0)  # (1, T, C)
            self.llama(inputs_embeds=x, cache=self.cache, use_cache=True, logits_to_keep=1)
            n += 1
        return n

    def restart(self) -> None:
        from transformers import DynamicCache

        self.cache, self.buffer = DynamicCache(config=self.llama.config), np.zeros(0, dtype=np.float32)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.keys, layer.values))


def run_side(name: str, args: argparse.Namespace, tokenizer_dir: Path) -> list[dict]:
    """Stream `args.minutes` of audio through one side -> one row per reported minute."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    model = build_model(args, tokenizer_dir)
    side = RWKVSide(model, args.window_s) if name == "rwkv" else TransformerSide(model, args.window_s, args)
    rate = model.encoders["audio"].sample_rate
    # a few windows before the clock starts: first calls build compiled steps and time the prefill crossover
    for chunk in microphone(3 * args.window_s, args.chunk_s, rate):
        side.feed(chunk)
    side.restart()
    rows, cpu, wall, stream_s, minute_end = [], [], [], 0.0, args.minute_s
    busy_wall = 0.0
    for chunk in microphone(args.minutes * 60, args.chunk_s, rate):
        c0, w0 = time.process_time(), time.perf_counter()
        encoded = side.feed(chunk)
        c1, w1 = time.process_time(), time.perf_counter()
        busy_wall += w1 - w0
        stream_s += chunk.shape[0] / rate
        if encoded:
            cpu.append((c1 - c0) / encoded)
            wall.append((w1 - w0) / encoded)
        if stream_s >= minute_end - 1e-9:
            rows.append(
                {
                    "minute": round(minute_end / 60, 3),
                    "ms": 1e3 * low_decile(cpu),
                    "median_ms": 1e3 * statistics.median(cpu),
                    "wall_ms": 1e3 * statistics.median(wall),
                    "rtf": busy_wall / args.minute_s,
                    "rss_mb": rss_bytes() / 2**20,
                    "state_bytes": side.nbytes(),
                }
            )
            cpu, wall, busy_wall, minute_end = [], [], 0.0, minute_end + args.minute_s
    return rows


def low_decile(values: list[float]) -> float:
    """The 10th percentile: a window's own cost with the least interference from other processes."""
    return statistics.quantiles(values, n=10)[0] if len(values) > 1 else values[0]


def _child(name: str, args: argparse.Namespace, tokenizer_dir: Path, queue) -> None:
    queue.put((name, run_side(name, args, tokenizer_dir)))


def run(args: argparse.Namespace) -> int:
    import tempfile

    from mmrwkv.tokenizer import train_bpe

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or set(sides) - {"rwkv", "transformer"}:
        raise SystemExit(f"--sides {args.sides!r}: name rwkv and/or transformer")
    if args.minutes * 60 < args.minute_s or args.window_s > args.minute_s:
        raise SystemExit(f"--minutes {args.minutes} must hold one --minute-s {args.minute_s} row of whole windows")
    print(
        f"stream: {args.minutes:g} min of audio in {args.chunk_s:g} s chunks, {args.window_s:g} s windows, "
        f"projector {args.reduction}; L{args.n_layer} C{args.n_embd} head {args.head_size} V{args.vocab_size}, "
        "fp32, 1 thread, CPU; the sides run at the same time, each in its own process",
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        train_bpe(
            ["User: what was the last sound?\n\nAssistant: a rising chirp\n\n"] * 50,
            args.vocab_size,
            Path(tmp) / "tokenizer.json",
        )
        context = mp.get_context("spawn")
        queue = context.Queue()
        procs = [context.Process(target=_child, args=(name, args, Path(tmp), queue)) for name in sides]
        for proc in procs:
            proc.start()
        for _ in procs:
            name, rows = queue.get()
            results[name] = rows
            _print({name: rows})
        for proc in procs:
            proc.join()
    results = {name: results[name] for name in sides}
    summary = _summary(results)
    _plot(results, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
                    "rows": results,
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 0


def _print(results: dict) -> None:
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:>11} minute {r['minute']:6.2f}: {r['ms']:7.2f} ms/window CPU p10 "
                f"(median {r['median_ms']:7.2f}, wall {r['wall_ms']:7.2f}), "
                f"RTF {r['rtf']:.4f}, RSS {r['rss_mb']:7.1f} MiB, state {r['state_bytes'] / 2**20:8.3f} MiB",
                flush=True,
            )


def _summary(results: dict) -> dict:
    """Last row over first row per side and metric; RWKV's flatness verdict (within 10%)."""
    out = {}
    for name, rows in results.items():
        first, last = rows[0], rows[-1]
        out[name] = {k: last[k] / first[k] for k in ("ms", "median_ms", "wall_ms", "rss_mb", "state_bytes")}
        out[name]["rtf"] = statistics.mean(r["rtf"] for r in rows)
    span = (
        f"minute {results[next(iter(results))][-1]['minute']:g} / minute {results[next(iter(results))][0]['minute']:g}"
    )
    for name, ratios in out.items():
        print(
            f"{name}: {span}: per-window CPU time p10 x{ratios['ms']:.3f} (median x{ratios['median_ms']:.3f}, wall "
            f"x{ratios['wall_ms']:.3f}), "
            f"RSS x{ratios['rss_mb']:.3f}, state/cache bytes x{ratios['state_bytes']:.2f}; "
            f"mean real-time factor {ratios['rtf']:.4f}"
        )
    if "rwkv" in out:
        r = out["rwkv"]
        flat = abs(r["ms"] - 1) <= 0.10 and abs(r["rss_mb"] - 1) <= 0.10
        beside = f"; transformer per-window time x{out['transformer']['ms']:.2f}" if "transformer" in out else ""
        print(f"rwkv per-window time (p10) and RSS flat within 10%: {'yes' if flat else 'NO'}{beside}")
        out["rwkv_flat"] = flat
    return out


def _plot(results: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"rwkv": "RWKV-7 (state)", "transformer": "Llama (KV cache)"}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in results.items():
        minutes = [r["minute"] for r in rows]
        line = ax_t.plot(minutes, [r["ms"] for r in rows], marker=".", label=f"{labels[name]} p10")[0]
        ax_t.plot(
            minutes,
            [r["median_ms"] for r in rows],
            linestyle="--",
            color=line.get_color(),
            alpha=0.5,
            label=f"{labels[name]} median",
        )
        ax_m.plot(minutes, [r["rss_mb"] for r in rows], marker=".", label=f"{labels[name]} RSS")
    ax_t.set_ylabel("ms CPU per audio window")
    ax_m.set_ylabel("process RSS MiB")
    for ax in (ax_t, ax_m):
        ax.set_xlabel("stream minute")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"live audio stream, {args.window_s:g} s windows, L{args.n_layer} C{args.n_embd}, fp32 CPU")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"plot: {args.out}")
