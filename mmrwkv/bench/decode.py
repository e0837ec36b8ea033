"""`mmrwkv bench decode`: RNN-mode decode tokens/s of a random RWKV-7, ours vs the `rwkv` package, vs the bound.

Both implementations run the same weights (an official-format .pth in a temp directory) at batch 1 on CPU.
The package runs in a subprocess (it needs RWKV_V7_ON=1 before import) that takes timing requests on stdin,
so rounds of ours and theirs interleave and share the machine's load. The bound is weight bytes read per token
divided by the measured read bandwidth (timed sums over a tensor far larger than the caches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# The package side: load once, then answer "N" lines with the seconds that N greedy steps took ("@" marks
# the replies: the package prints progress lines of its own).
_PACKAGE_SERVER = r"""
import json, sys, time, torch
torch.set_flush_denormal(True)
if int(sys.argv[2]) > 0:
    torch.set_num_threads(int(sys.argv[2]))
from rwkv.model import RWKV
model = RWKV(model=sys.argv[1], strategy="cpu fp32")
token, state = 0, None
logits, state = model.forward([token], state)
print("@ready", flush=True)
for line in sys.stdin:
    n = int(line)
    start = time.perf_counter()
    for _ in range(n):
        token = int(torch.argmax(logits))
        logits, state = model.forward([token], state)
    print("@" + json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="v7-0.1b", help="named model size (RWKV-7)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens per timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round counts")
    parser.add_argument("--no-package", action="store_true", help="skip the rwkv package comparison")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-weights row")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for both sides (0: the fastest for our decode, timed)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def random_model(size: str, seed: int = 0):
    """An RWKV-7 of a named size with official init, its zero-initialised matrices given small random values
    (so activations look like a trained model's rather than exact zeros)."""
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(seed)
    model = RWKV(config_for(size)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return model


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: everything except the embedding table (one row is read)."""
    emb = model.emb.weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total - emb.numel() * emb.element_size() + emb.shape[1] * emb.element_size()


def read_bandwidth(n_bytes: int = 1 << 29, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s over an fp32 buffer of `n_bytes`: the best of a sum and of a vector-matrix
    product (the decode step's own access pattern; on a busy machine either can be the faster reader)."""
    x = torch.ones(n_bytes // 4)
    matrix, vector = x.view(-1, 1024), torch.ones(n_bytes // 4 // 1024)
    best = float("inf")
    for _ in range(repeats):
        for read in (x.sum, lambda: vector @ matrix):
            start = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - start)
    return n_bytes / best


class _Ours:
    """Greedy decode with our RNN-mode step (the model's compiled T = 1 path, via `RWKVStepper`)."""

    def __init__(self, model):
        from mmrwkv.stepper import RWKVStepper

        self.step = RWKVStepper(model)
        self.logits, self.state = self.step(torch.tensor([0]), model.init_state(1))

    def __call__(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            token = self.logits[0].argmax().view(1)
            self.logits, self.state = self.step(token, self.state)
        return time.perf_counter() - start


class _Package:
    """The `rwkv` package in a subprocess, timed on request."""

    def __init__(self, pth: Path, threads: int):
        env = {**os.environ, "RWKV_V7_ON": "1", "RWKV_JIT_ON": "1", "RWKV_CUDA_ON": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PACKAGE_SERVER, str(pth.with_suffix("")), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self._reply() != "ready":
            raise RuntimeError(f"the rwkv package failed to load {pth} (exit code {self.proc.poll()})")

    def _reply(self) -> str:
        """The next line the server marked with "@" (the package prints its own progress lines too)."""
        for line in self.proc.stdout:
            if line.startswith("@"):
                return line[1:].strip()
        return ""

    def __call__(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self._reply())["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _measure(runners: dict, tokens: int, rounds: int) -> dict[str, float]:
    """Median tokens/s of each runner over interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(run(tokens))
    return {name: tokens / statistics.median(ts) for name, ts in times.items()}


PACKAGE_ROW = "rwkv package 0.8.32 (cpu fp32)"


def _runners(args, model, pth: Path | None) -> tuple[dict, dict]:
    from mmrwkv.stepper import column_major_linears

    fp32_bytes = weight_bytes_per_token(model)
    column_major = random_model(args.size)
    column_major_linears(column_major)
    runners = {"ours (fp32)": _Ours(model), "ours, column-major (fp32)": _Ours(column_major)}
    bytes_per_token = dict.fromkeys(runners, fp32_bytes)
    if pth is not None:
        runners[PACKAGE_ROW] = _Package(pth, torch.get_num_threads())
        bytes_per_token[PACKAGE_ROW] = fp32_bytes
    if not args.no_bf16:
        bf16 = random_model(args.size).to(torch.bfloat16)
        runners["ours (bf16)"] = _Ours(bf16)
        bytes_per_token["ours (bf16)"] = weight_bytes_per_token(bf16)
    return runners, bytes_per_token


def fastest_threads(model, tokens: int = 3) -> int:
    """The torch thread count (1 .. CPU count) with the fastest decode of `model` over `tokens` tokens."""
    best, best_time = 1, float("inf")
    for threads in range(1, (os.cpu_count() or 1) + 1):
        torch.set_num_threads(threads)
        ours = _Ours(model)
        seconds = min(ours(tokens) for _ in range(2))
        if seconds < best_time:
            best, best_time = threads, seconds
    return best


def run(args: argparse.Namespace) -> int:
    # Random weights drift into subnormal floats, which x86 handles ~100x slower; trained weights rarely do.
    # The flag is process-wide: restore the default so callers (and tests) are not affected.
    # Threads are process-wide too.
    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    model = random_model(args.size)
    torch.set_num_threads(args.threads if args.threads > 0 else fastest_threads(model))
    with tempfile.TemporaryDirectory() as tmp:
        pth = None
        if not args.no_package:
            from mmrwkv.checkpoint import save_official

            pth = save_official(model, Path(tmp) / "model.pth")
        runners, bytes_per_token = _runners(args, model, pth)
        try:
            rates = _measure(runners, args.tokens, args.rounds)
        finally:
            for r in runners.values():
                if isinstance(r, _Package):
                    r.close()
    bandwidth = read_bandwidth()
    rows = _report(args, model, rates, bytes_per_token, bandwidth)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"bandwidth_GBps": bandwidth / 1e9, "threads": torch.get_num_threads(), "rows": rows}
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def _report(args, model, rates: dict, bytes_per_token: dict, bandwidth: float) -> list[dict]:
    cfg = model.config
    package = rates.get(PACKAGE_ROW)
    threads = f"{torch.get_num_threads()}{'' if args.threads else ' (auto: fastest)'}"
    print(
        f"decode, batch 1, {args.size} (L{cfg.n_layer} C{cfg.n_embd} V{cfg.vocab_size}), CPU threads {threads}, "
        f"{args.rounds} rounds x {args.tokens} tokens (median round)"
    )
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"{'implementation':34s} {'tok/s':>8s} {'ms/tok':>8s} {'bound':>8s} {'% bound':>8s} {'vs pkg':>7s}")
    rows = []
    for name, rate in rates.items():
        bound = bandwidth / bytes_per_token[name]
        ratio = rate / package if package else float("nan")
        print(f"{name:34s} {rate:8.2f} {1e3 / rate:8.1f} {bound:8.1f} {100 * rate / bound:7.0f}% {ratio:6.2f}x")
        rows.append(
            {
                "name": name,
                "tok_per_s": rate,
                "bound_tok_per_s": bound,
                "vs_package": ratio,
                "weight_bytes_per_token": bytes_per_token[name],
            }
        )
    return rows
