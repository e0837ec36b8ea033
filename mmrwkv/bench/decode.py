"""`mmrwkv bench decode`: RNN-mode decode tokens/s of a random RWKV-7, ours vs the `rwkv` package, vs the bound.

Both implementations run the same weights (an official-format .pth in a temp directory) at batch 1 on CPU.
The package runs in a subprocess (it needs RWKV_V7_ON=1 before import) that takes timing requests on stdin,
so rounds of ours and theirs interleave and share the machine's load. The bound is weight bytes read per token
divided by the measured read bandwidth: the best of several passes of each reader (sum, row- and column-major
sgemv, our native mat-vec) over an fp32 buffer far larger than the caches (4x the last-level cache, >= 1 GiB), at
the same thread count. A bandwidth pass runs before the first round and after every round of every runner, and each
round is compared with the fastest reader's passes on either side of it (the bandwidth of a shared machine drifts
within a minute; a bound taken from another minute moves the ratio). On a shared machine,
`--clock cpu` (1 thread) times everything in process CPU time, which leaves out the time other processes hold the
core (it cannot leave out their memory traffic).
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

from mmrwkv.kernels import cpu as native

# The package side: load once, then answer "N" lines with the seconds that N greedy steps took ("@" marks
# the replies: the package prints progress lines of its own).
_PACKAGE_SERVER = r"""
import json, sys, time, torch
torch.set_flush_denormal(True)
clock = time.process_time if sys.argv[3] == "cpu" else time.perf_counter
if int(sys.argv[2]) > 0:
    torch.set_num_threads(int(sys.argv[2]))
from rwkv.model import RWKV
model = RWKV(model=sys.argv[1], strategy="cpu fp32")
token, state = 0, None
logits, state = model.forward([token], state)
print("@ready", flush=True)
for line in sys.stdin:
    n = int(line)
    start = clock()
    for _ in range(n):
        token = int(torch.argmax(logits))
        logits, state = model.forward([token], state)
    print("@" + json.dumps({"seconds": clock() - start}), flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="v7-0.1b", help="named model size (RWKV-7)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens per timing round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median round counts")
    parser.add_argument("--no-package", action="store_true", help="skip the rwkv package comparison")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-weights row")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for both sides (0: the fastest for our decode, timed)"
    )
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall time, or process CPU time (needs --threads 1)"
    )
    parser.add_argument(
        "--isa",
        default="",
        help="also time these native ISA variants side by side (comma list of avx512, avx2, portable, neon, or 'all' "
        "that this CPU runs): an fp32 and a bf16 row each, straight on a native plan over the default rows' weights",
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


def buffer_bytes() -> int:
    """Size of the bandwidth buffer: 4x the last-level cache (from sysfs), at least 1 GiB."""
    largest = 0
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        largest = max(largest, int(text.rstrip("KMG")) * scale)
    return max(1 << 30, 4 * largest)


class ReadBandwidth:
    """Read bandwidth over an fp32 buffer of `n_bytes` (default `buffer_bytes()`): each call times one pass of each
    reader: a sum, a row-major and a column-major sgemv (the BLAS), and our native mat-vec when it is built (the
    decode step's own reader). The bound takes the fastest reader, the hardest bound to approach. Calls can
    interleave with decode rounds, so that both see the same load."""

    def __init__(self, n_bytes: int | None = None, clock=time.perf_counter):
        from mmrwkv.kernels import cpu as native

        n = (n_bytes or buffer_bytes()) // 4 // 1024 * 1024
        self.bytes, self.clock, self.passes = 4 * n, clock, []
        buf = torch.ones(n)
        rows, x_row, x_col = buf.view(-1, 1024), torch.ones(1024), torch.ones(n // 1024)
        self.readers = {"sum": buf.sum, "sgemv row-major": lambda: rows @ x_row,
                        "sgemv column-major": lambda: x_col @ rows}  # fmt: skip
        if native.enabled():
            self.readers["native mat-vec"] = lambda: native.linear(x_row.view(1, -1), rows)

    @torch.no_grad()
    def __call__(self) -> None:
        one = {}
        for name, read in self.readers.items():
            start = self.clock()
            read()
            one[name] = self.bytes / (self.clock() - start)
        self.passes.append(one)

    def best(self) -> dict[str, float]:
        """Bytes/s of each reader's fastest pass."""
        return {name: max(p[name] for p in self.passes) for name in self.readers}

    def fastest(self) -> str:
        """The reader with the highest median pass (the one each decode round is compared with)."""
        return max(self.readers, key=lambda name: statistics.median(p[name] for p in self.passes))

    def median(self) -> float:
        """The fastest reader's median pass: each reader's median over passes, then the largest. (The decode rows
        are medians of rounds; a median of each pass's fastest of four readers would compare them with the luckiest
        of four draws of the machine's noise instead: `median_of_pass_best`, printed for reference.)"""
        return max(statistics.median(p[name] for p in self.passes) for name in self.readers)

    def median_of_pass_best(self) -> float:
        """Median over passes of the fastest reader of each pass (the bound's definition before the one above)."""
        return statistics.median(max(p.values()) for p in self.passes)


def read_bandwidth(n_bytes: int | None = None, repeats: int = 5, clock=time.perf_counter) -> dict[str, float]:
    """Bytes/s of each reader (see `ReadBandwidth`), the best of `repeats` passes."""
    bandwidth = ReadBandwidth(n_bytes, clock)
    for _ in range(repeats):
        bandwidth()
    return bandwidth.best()


class _Ours:
    """Greedy decode with our RNN-mode step (via `RWKVStepper`): the native step (of ISA variant `isa`, default the
    one in use), or with native=False plain torch (sequence mode at one token: the fallback where the native build is
    unavailable). A model keeps the native plan of its first step: one model object per variant."""

    def __init__(self, model, clock=time.perf_counter, *, native: bool = True, isa: str | None = None):
        from mmrwkv.inference.stepper import RWKVStepper

        self.step, self.clock, self.native, self.isa = RWKVStepper(model), clock, native, isa
        with self._switch():
            self.logits, self.state = self.step(torch.tensor([0]), model.init_state(1))

    def _switch(self):
        from contextlib import ExitStack

        from mmrwkv.kernels import scoped_env

        stack = ExitStack()
        stack.enter_context(scoped_env(native.ENV_VAR, None if self.native else "0"))
        stack.enter_context(scoped_env(native.ISA_VAR, self.isa))
        return stack

    def __call__(self, n: int) -> float:
        from mmrwkv.kernels import cpu as native

        with self._switch():
            start = self.clock()
            for _ in range(n):
                pick = native.step_pick(self.logits[0])  # greedy: the pick the native step made on the way
                token = native.argmax(self.logits[0]) if pick is None else torch.tensor([pick])
                self.logits, self.state = self.step(token, self.state)
            return self.clock() - start


class _Package:
    """The `rwkv` package in a subprocess, timed on request."""

    def __init__(self, pth: Path, threads: int, clock: str = "wall"):
        env = {**os.environ, "RWKV_V7_ON": "1", "RWKV_JIT_ON": "1", "RWKV_CUDA_ON": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PACKAGE_SERVER, str(pth.with_suffix("")), str(threads), clock],
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


def _measure(runners: dict, tokens: int, rounds: int, bandwidth: ReadBandwidth) -> dict[str, list[tuple]]:
    """Rounds of every runner in turn, each round between two bandwidth passes (one pass first, then one after every
    round): per runner, (seconds, index of the pass before) for each round, so that each round is compared with the
    memory system of its own moment (on a shared machine the read bandwidth drifts within a minute)."""
    rounds_of: dict[str, list[tuple[float, int]]] = {name: [] for name in runners}
    bandwidth()
    for _ in range(rounds):
        for name, run in runners.items():
            seconds = run(tokens)
            rounds_of[name].append((seconds, len(bandwidth.passes) - 1))
            bandwidth()
    return rounds_of


def _rates(rounds_of: list[tuple[float, int]], tokens: int, n_bytes: int, bandwidth: ReadBandwidth) -> dict:
    """One runner's figures: tok/s of its median and best round; per round the bound (the fastest reader's passes
    on either side of it, averaged, over the weight bytes per token) and the round's share of it; the medians."""
    reader = bandwidth.fastest()
    rates = [tokens / seconds for seconds, _ in rounds_of]
    bounds = [(bandwidth.passes[i][reader] + bandwidth.passes[i + 1][reader]) / 2 / n_bytes for _, i in rounds_of]
    return {"tok_per_s": statistics.median(rates), "best_tok_per_s": max(rates),
            "bound_tok_per_s": statistics.median(bounds),
            "of_bound": statistics.median(r / b for r, b in zip(rates, bounds, strict=True)),
            "rounds_of_bound": [r / b for r, b in zip(rates, bounds, strict=True)],
            "best_bound_tok_per_s": max(bandwidth.best().values()) / n_bytes}  # fmt: skip


PACKAGE_ROW = "rwkv package 0.8.32 (cpu fp32)"
ROWS = ("ours (fp32)", "ours, column-major (fp32)", "ours, plain torch (fp32)", PACKAGE_ROW, "ours (bf16)",
        "ours, column-major (bf16)")  # fmt: skip


class _VariantPlan:
    """Greedy decode straight on a native plan of ISA variant `isa` over `model`'s own weights (the memory the
    default rows read too, so that variants compare on equal terms: models allocated later stream slower on some
    machines), without the engine's Python around the call."""

    def __init__(self, model, isa: str, clock=time.perf_counter):
        from mmrwkv.inference.engine import native_weights

        blocks, ln0 = model.blocks, model.blocks[0].ln0
        ends = (ln0.weight, ln0.bias, model.ln_out.weight, model.ln_out.bias, model.head.weight)
        params = [native_weights(b) for b in blocks]
        self.plan = native.token_plan(blocks[0].att.n_head, params, ends, variant=isa)
        self.module, self.emb, self.clock = native.load(isa), model.emb.weight, clock
        state = model.init_state(1)
        self.state, self.token = (state.att_x_prev, state.wkv, state.ffn_x_prev), 0
        self(1)  # the first token of a plan (as `_Ours` takes it when made)

    @torch.no_grad()
    def __call__(self, n: int) -> float:
        start = self.clock()
        for _ in range(n):
            logits, *state = self.plan.step(self.emb[self.token].view(1, -1), *self.state)
            self.state = tuple(state)
            pick = self.module.step_pick(logits)
            self.token = pick if pick >= 0 else int(logits.argmax())
        return self.clock() - start


def _runners(args, model, pth: Path | None, clock) -> tuple[dict, dict]:
    """The rows' runners (ours: native step, fp32 row- and column-major, plain torch; the package; bf16) and the
    weight bytes each reads per token."""
    from mmrwkv.inference.stepper import column_major_linears

    def column_major(m):
        column_major_linears(m)
        return m

    fp32_bytes = weight_bytes_per_token(model)
    extra = _extra_variants(args.isa)
    runners = {ROWS[0]: _Ours(model, clock), ROWS[1]: _Ours(column_major(random_model(args.size)), clock)}
    runners[ROWS[2]] = _Ours(model, clock, native=False)
    for isa in extra:
        runners[f"ours, {isa} plan (fp32)"] = _VariantPlan(model, isa, clock)
    if pth is not None:
        runners[PACKAGE_ROW] = _Package(pth, torch.get_num_threads(), args.clock)
    bytes_per_token = dict.fromkeys(runners, fp32_bytes)
    if not args.no_bf16:
        bf16 = random_model(args.size).to(torch.bfloat16)
        bf16_rows = {ROWS[4]: _Ours(bf16, clock)}
        bf16_rows[ROWS[5]] = _Ours(column_major(random_model(args.size).to(torch.bfloat16)), clock)
        for isa in extra:
            bf16_rows[f"ours, {isa} plan (bf16)"] = _VariantPlan(bf16, isa, clock)
        runners.update(bf16_rows)
        bytes_per_token.update(dict.fromkeys(bf16_rows, weight_bytes_per_token(bf16)))
    return runners, bytes_per_token


def _extra_variants(asked: str) -> list[str]:
    """The ISA variants of --isa other than the one in use (each checked: SystemExit names one this CPU cannot
    run)."""
    names = list(native.variants()) if asked.strip() == "all" else [a.strip() for a in asked.split(",") if a.strip()]
    for name in names:
        if name not in native.variants():
            raise SystemExit(f"bench decode: --isa {name}: this CPU runs {', '.join(native.variants())}")
    in_use = native.isa() if native.enabled() else None
    return [name for name in dict.fromkeys(names) if name != in_use]


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
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit(f"bench decode: --clock cpu needs --threads 1 (got --threads {args.threads}): the CPU time "
                         "of several threads is not the time a token takes")  # fmt: skip
    # Random weights drift into subnormal floats, which x86 handles far slower; trained weights rarely do.
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
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = random_model(args.size)
    torch.set_num_threads(args.threads if args.threads > 0 else fastest_threads(model))
    with tempfile.TemporaryDirectory() as tmp:
        pth = None
        if not args.no_package:
            from mmrwkv.checkpoint import save_official

            pth = save_official(model, Path(tmp) / "model.pth")
        runners, bytes_per_token = _runners(args, model, pth, clock)
        bandwidth = ReadBandwidth(clock=clock)
        try:
            rounds_of = _measure(runners, args.tokens, args.rounds, bandwidth)
        finally:
            for r in runners.values():
                if isinstance(r, _Package):
                    r.close()
    rates = {name: _rates(r, args.tokens, bytes_per_token[name], bandwidth) for name, r in rounds_of.items()}
    rows = _report(args, model, rates, bytes_per_token, bandwidth)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        readers = {name: bw / 1e9 for name, bw in bandwidth.best().items()}
        summary = {"bandwidth_GBps": max(readers.values()), "median_bandwidth_GBps": bandwidth.median() / 1e9,
                   "median_of_pass_best_GBps": bandwidth.median_of_pass_best() / 1e9, "readers_GBps": readers,
                   "threads": torch.get_num_threads(), "clock": args.clock, "route": native.route(),
                   "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def _report(args, model, rates: dict, bytes_per_token: dict, bandwidth: ReadBandwidth) -> list[dict]:
    cfg = model.config
    best_readers = bandwidth.best()
    best_bw, median_bw = max(best_readers.values()), bandwidth.median()
    package = rates[PACKAGE_ROW]["tok_per_s"] if PACKAGE_ROW in rates else None
    threads = f"{torch.get_num_threads()}{'' if args.threads else ' (auto: fastest)'}"
    print(native.route())
    print(
        f"decode, batch 1, {args.size} (L{cfg.n_layer} C{cfg.n_embd} V{cfg.vocab_size}), CPU threads {threads}, "
        f"{args.rounds} rounds x {args.tokens} tokens, {args.clock} clock"
    )
    readers = ", ".join(f"{name} {bw / 1e9:.1f}" for name, bw in best_readers.items())
    print(
        f"read bandwidth: best {best_bw / 1e9:.1f} GB/s ({readers}); fastest reader: {bandwidth.fastest()}, "
        f"median pass {median_bw / 1e9:.1f} GB/s (median of each pass's fastest: "
        f"{bandwidth.median_of_pass_best() / 1e9:.1f})"
    )
    print(f"{'implementation':30s} {'tok/s':>7s} {'ms/tok':>7s} {'bound':>7s} {'% bound':>8s} {'% med':>6s} "
          f"{'best':>7s} {'bound':>7s} {'best %':>7s} {'vs pkg':>7s}")  # fmt: skip
    rows = []
    for name, r in rates.items():
        rate, best, best_bound = r["tok_per_s"], r["best_tok_per_s"], r["best_bound_tok_per_s"]
        of_median = rate * bytes_per_token[name] / median_bw
        ratio = rate / package if package else float("nan")
        print(f"{name:30s} {rate:7.2f} {1e3 / rate:7.1f} {r['bound_tok_per_s']:7.1f} {100 * r['of_bound']:7.0f}% "
              f"{100 * of_median:5.0f}% {best:7.2f} {best_bound:7.1f} {100 * best / best_bound:6.0f}% "
              f"{ratio:6.2f}x")  # fmt: skip
        rows.append({"name": name, **r, "of_median_pass": of_median, "vs_package": ratio,
                     "weight_bytes_per_token": bytes_per_token[name]})  # fmt: skip
    print("tok/s: median round. bound, % bound: each round against the fastest reader's passes just before and after")
    print("it (medians over rounds); % med: the median round against that reader's median pass over the whole run;")
    print("best: the best round against the best pass of any reader; vs pkg: medians. A shared machine adds noise.")
    return rows
