"""`mmrwkv bench wkv`: forward+backward time of each WKV backend for one op, side by side.

Inputs come from `mmrwkv.kernels.reference.random_inputs` (the ranges the models produce), with a
state in and out. Backends are timed in interleaved rounds (so they share the machine's load) and the
median round counts. The reference loops over time in Python and is linear in T: by default it is timed
on a shorter T and scaled linearly to the requested T, which the table says.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from pathlib import Path

import torch

from mmrwkv.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmrwkv bench wkv`."""
    parser.add_argument("--op", choices=("wkv4", "wkv6", "wkv7"), default="wkv7")
    parser.add_argument("--B", type=int, default=1, help="batch size")
    parser.add_argument("--T", type=int, default=4096, help="sequence length")
    parser.add_argument("--C", type=int, default=768, help="channels (H = C / head size)")
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="fp32", help="dtype of r, w, k, v, ...")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument(
        "--ref-T",
        type=int,
        default=512,
        help="time the reference on this T and scale linearly to --T (0: time it at --T)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median counts")
    parser.add_argument("--scaling", action="store_true", help="also time chunked at 4*T and report the ratio")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    """Time the backends and print the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.C % args.head_size:
        raise ConfigError(f"--C {args.C} is not a multiple of --head-size {args.head_size}")
    ref_t = args.ref_T if 0 < args.ref_T < args.T else args.T
    jobs = [("reference", "reference", ref_t), ("chunked", "chunked", args.T)]
    if args.scaling:
        jobs.append(("chunked 4T", "chunked", 4 * args.T))
    notes = []
    ok, reason = _cuda_ready(device)
    if ok:
        jobs.append(("cuda", "cuda", args.T))
    else:
        notes.append(f"cuda: not timed ({reason})")
    from mmrwkv.kernels import cpu as native

    print(native.route(), flush=True)
    times = _time_rounds(args, device, jobs)
    rows = _rows(args, jobs, times)
    _print_table(args, device, rows, notes)
    if args.json:
        args.json.write_text(json.dumps({"args": _plain(vars(args)), "device": str(device), "rows": rows}, indent=2))
    return 0


def _cuda_ready(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, f"device is {device}"
    try:
        cuda = importlib.import_module("mmrwkv.kernels.cuda")
    except ImportError as err:
        return False, f"cannot import mmrwkv.kernels.cuda: {err}"
    return cuda.is_available()


def _inputs(args: argparse.Namespace, device: torch.device, t: int) -> dict[str, torch.Tensor]:
    from mmrwkv.kernels.reference import random_inputs

    inputs = random_inputs(
        args.op, args.B, t, args.C // args.head_size, args.head_size, dtype=_DTYPES[args.dtype], device=device
    )
    return {name: x.requires_grad_() for name, x in inputs.items()}


def _time_once(args: argparse.Namespace, device: torch.device, backend: str, t: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward+backward."""
    from mmrwkv import kernels

    inputs = _inputs(args, device, t)
    op = getattr(kernels, args.op)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    y, state = op(**inputs, backend=backend)
    (y.float().sum() + state.sum()).backward()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def _time_rounds(args, device, jobs) -> dict[str, list[float]]:
    # one untimed warm-up per backend at a short T (allocator, CUDA build, lazy imports)
    for _, backend, _ in jobs:
        _time_once(args, device, backend, min(args.T, 64))
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in jobs}
    for _ in range(max(1, args.rounds)):
        for label, backend, t in jobs:
            times[label].append(_time_once(args, device, backend, t))
    return times


def _rows(args, jobs, times) -> list[dict]:
    rows = []
    for label, _, t in jobs:
        wall = statistics.median(x[0] for x in times[label])
        cpu = statistics.median(x[1] for x in times[label])
        scale = (args.T if label != "chunked 4T" else 4 * args.T) / t
        rows.append(
            {
                "backend": label,
                "T_timed": t,
                "seconds": wall,
                "seconds_at_T": wall * scale,
                "cpu_seconds_at_T": cpu * scale,
                "scaled": t not in (args.T, 4 * args.T),
            }
        )
    ref = rows[0]["seconds_at_T"]
    for row in rows:
        row["speedup_vs_reference"] = ref / row["seconds_at_T"] if row["backend"] != "chunked 4T" else None
    return rows


def _print_table(args, device, rows, notes) -> None:
    print(
        f"WKV forward+backward, {args.op}, B={args.B} T={args.T} C={args.C} "
        f"H={args.C // args.head_size} N={args.head_size} {args.dtype}, {device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    print(f"{'backend':<12} {'T timed':>8} {'s timed':>9} {'s at T':>9} {'cpu s at T':>11} {'vs reference':>13}")
    for row in rows:
        speed = f"{row['speedup_vs_reference']:.1f}x" if row["speedup_vs_reference"] else "-"
        mark = "*" if row["scaled"] else ""
        at_t, cpu = f"{row['seconds_at_T']:.3f}{mark}", f"{row['cpu_seconds_at_T']:.3f}{mark}"
        print(f"{row['backend']:<12} {row['T_timed']:>8} {row['seconds']:>9.3f} {at_t:>9} {cpu:>11} {speed:>13}")
    if any(row["scaled"] for row in rows):
        print("* timed at the shorter T and scaled linearly to T (the reference loops over time)")
    by_name = {row["backend"]: row for row in rows}
    if "chunked 4T" in by_name:
        long, short = by_name["chunked 4T"], by_name["chunked"]
        print(
            f"chunked scaling: time(T={4 * args.T}) / time(T={args.T}) = "
            f"{long['seconds'] / short['seconds']:.2f} wall, "
            f"{long['cpu_seconds_at_T'] / short['cpu_seconds_at_T']:.2f} cpu (linear = 4.00)"
        )
    print("s = wall-clock seconds; cpu s = this process's CPU seconds (all threads), steadier on a shared machine")
    for note in notes:
        print(note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain(values: dict) -> dict:
    """The JSON-friendly options (drops the CLI's handler function)."""
    plain = {key: str(val) if isinstance(val, Path) else val for key, val in values.items()}
    return {key: val for key, val in plain.items() if isinstance(val, str | int | float | bool | type(None))}
