"""The GPU report of `kernels/check_gpu.sh`: one process, one torch import, one build per head size.

    python -m mmrwkv.kernels.check_gpu [--out DIR] [--budget SECONDS] [--dry-run]

Sections, printed and written to DIR/check_gpu.json: `ptxas` (registers, stack and spills of every CUDA kernel
for this GPU's architecture), `accuracy` (per backend, op, dtype and length: max absolute and relative error of
y, the final state and every gradient against the fp64 reference run on the same rounded inputs; wkv7 also at
T = 4096 with the strongest model decay, where stepping the state back loses the most), `timing` (CUDA-event
medians of forward and forward+backward at B8 T4096 C4096 H64 bf16 for every backend: ours, our Triton one per
chunk length, fla when installed; each with its largest error against ours). Relative error: max |got - want|
divided by max |want|. Exit status 1 when one of our kernels fails or misses its tolerance.

--dry-run (CPU): builds nothing; runs the same code on tiny shapes with "chunked" standing in for the CUDA
kernels and the Triton kernels under the interpreter, to check the report itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

DRY = "--dry-run" in sys.argv
if DRY:
    # before anything imports triton: it picks interpreted or compiled at import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# the model's strongest RWKV-7 decay: w = -exp(-0.5) * sigmoid(.) >= -exp(-0.5)
STRONG_W = -0.6065
# relative error allowed for our kernels: fp32 at T <= 1000, fp32 at 4096 with the strongest decay, bf16
TOLERANCE = {"fp32": 2e-3, "fp32-long": 2e-2, "bf16": 5e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# our Triton backend per schedule and chunk length: the first (the default) also goes through the accuracy table
TRITON_VARIANTS = (("parallel", "32"), ("parallel", "16"), ("sequential", "16"), ("parallel", "64"))
# budget (s) a backend needs left to start: fla autotunes each new shape on its first call; chunks of 64 compile
# slowly (minutes on a loaded CPU)
MIN_LEFT_S = {"fla": 120.0, "fla-bound": 120.0, "triton-64": 150.0}


class Budget:
    """Wall-clock budget: sections past it are skipped and say so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def make_inputs(op: str, bsz: int, t: int, h: int, n: int, device: str, *, strong: bool = False, seed: int = 0):
    """fp32 keyword inputs in the models' ranges, made on `device` (no host copies of large tensors)."""
    gen = torch.Generator(device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    shape = (bsz, t, h, n)
    if op == "wkv4":
        c = h * n
        s0 = torch.stack((rnd(bsz, c), 1 + rnd(bsz, c).abs(), rnd(bsz, c)), dim=1)
        return {"w": -torch.exp(0.5 * rnd(c)), "u": rnd(c), "k": rnd(bsz, t, c), "v": rnd(bsz, t, c), "state": s0}
    s0 = 0.3 * rnd(bsz, h, n, n)
    if op == "wkv6":
        return {"r": rnd(*shape), "w": -torch.exp(0.5 * rnd(*shape) - 2), "k": rnd(*shape), "v": rnd(*shape),
                "u": rnd(h, n), "state": s0}  # fmt: skip
    kk = torch.nn.functional.normalize(rnd(*shape), dim=-1)
    w = torch.full(shape, STRONG_W, device=device) if strong else STRONG_W * torch.sigmoid(rnd(*shape))
    gate = torch.sigmoid(rnd(*shape))
    return {"r": rnd(*shape), "w": w, "k": rnd(*shape), "v": rnd(*shape), "a": -kk, "b": kk * gate, "state": s0}


def run_grads(fn, xs: dict, dtype: torch.dtype, seed: int = 1) -> dict[str, torch.Tensor]:
    """y, final state and the gradient of every input, for loss = <y, gy> + <state, gs> with fixed random gy, gs.

    Inputs are cast to `dtype` except the state and wkv4's w, u (fp32, as the models pass them).
    """
    keep = {"state"} | ({"w", "u"} if "a" not in xs and "r" not in xs else set())
    leaves = {k: (x if k in keep else x.to(dtype)).detach().clone().requires_grad_() for k, x in xs.items()}
    if dtype == torch.float64:
        leaves = {k: x.detach().double().requires_grad_() for k, x in leaves.items()}
    y, s = fn(**leaves)
    gen = torch.Generator(y.device).manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, device=y.device).to(y.dtype)
    gs = torch.randn(s.shape, generator=gen, device=y.device).to(s.dtype)
    torch.autograd.backward((y, s), (gy, gs))
    return {"y": y.detach(), "state": s.detach(), **{f"d{k}": x.grad for k, x in leaves.items()}}


def errors(got: dict, want: dict) -> dict[str, dict[str, float]]:
    """Per output: max absolute error and that over max |want| (NaN/inf become inf)."""
    out = {}
    for name, w in want.items():
        g = got[name].double()
        diff = (g - w.double()).abs().max().item() if torch.isfinite(g).all() else float("inf")
        out[name] = {"abs": diff, "rel": diff / max(w.double().abs().max().item(), 1e-12)}
    return out


def backends(dry: bool) -> dict[str, Any]:
    """name -> (callable(op, **inputs) or None, reason), in the order the tables run them: ours, our default
    Triton variant, fla, then the other variants (a run short of time loses the last ones)."""
    from mmrwkv.kernels import chunked, cuda, triton_fla, triton_wkv

    device = torch.device("cpu" if dry else "cuda")
    found: dict[str, Any] = {}
    if dry:
        found["ours"] = (lambda op, **x: getattr(chunked, op)(**x), "dry run: 'chunked' stands in for the CUDA kernels")
    else:
        ok, why = cuda.is_available()
        found["ours"] = ((lambda op, **x: getattr(cuda, op)(**x)) if ok else None, why)
    ok, why = triton_wkv.available(device)
    for schedule, chunk in TRITON_VARIANTS[:1] if dry else TRITON_VARIANTS:
        name = f"triton-{chunk}" if schedule == "parallel" else f"triton-seq-{chunk}"
        found[name] = (_with_chunk(triton_wkv.wkv7, schedule, chunk) if ok else None, why)
    ok, why = triton_fla.available(device)
    fla = {
        "fla": ((lambda op, **x: triton_fla.wkv7(**x)) if ok else None, why),
        "fla-bound": ((lambda op, **x: triton_fla.wkv7(**x, lower_bound=STRONG_W)) if ok else None, why),
    }
    order = ["ours", f"triton-{TRITON_VARIANTS[0][1]}", "fla", f"triton-{TRITON_VARIANTS[1][1]}", "fla-bound"]
    found.update(fla)
    return {name: found[name] for name in order + list(found) if name in found}


def _with_chunk(fn, schedule: str, chunk: str):
    def call(op, **x):
        if op != "wkv7":
            raise ValueError(f"{op}: the Triton backend implements wkv7 only")
        os.environ["MMRWKV_TRITON_SCHEDULE"], os.environ["MMRWKV_TRITON_CHUNK"] = schedule, chunk
        return fn(**x)

    return call


def accuracy_cases(dry: bool) -> list[dict[str, Any]]:
    """(op, T, strong, shape) of the accuracy table; tiny in a dry run."""
    b, h, n = (1, 2, 16) if dry else (2, 2, 64)
    lengths = (37, 100) if dry else (37, 1000)
    cases = [{"op": op, "T": t, "strong": False, "B": b, "H": h, "N": n} for op in ("wkv7", "wkv6", "wkv4")
             for t in lengths]  # fmt: skip
    cases.append({"op": "wkv7", "T": 200 if dry else 4096, "strong": True, "B": 1, "H": 2, "N": n})
    return cases


def _wanted(name: str, case: dict, dname: str, dry: bool) -> bool:
    """Which backends a case runs: ours always; Triton (default chunk) on wkv7; fla on wkv7 at the middle length."""
    if name == "ours":
        return True
    if case["op"] != "wkv7" or (dry and dname == "bf16"):  # the interpreter has no bf16 products
        return False
    if name.startswith("triton"):
        return name == f"triton-{TRITON_VARIANTS[0][1]}"
    return name == "fla" and not case["strong"] and case["T"] > 100


def accuracy(found: dict, dry: bool, budget: Budget, device: str, rows: list) -> list[dict[str, Any]]:
    """The accuracy table: every case x dtype x backend that implements the op (rows appended as they finish)."""
    for case in accuracy_cases(dry):
        xs = make_inputs(case["op"], case["B"], case["T"], case["H"], case["N"], device, strong=case["strong"])
        for dname in ("fp32", "bf16"):
            # the reference runs in fp64 on the inputs rounded as the backend sees them
            rounded = run_inputs_rounded(xs, DTYPES[dname])
            want = None
            for name, (fn, _) in found.items():
                if fn is None or not _wanted(name, case, dname, dry):
                    continue
                row = {"backend": name, **case, "dtype": dname}
                if budget.left() <= MIN_LEFT_S.get(name, 0.0):
                    rows.append({**row, "skipped": "time budget"})
                    continue
                if want is None:
                    want = run_grads(_reference(case["op"]), rounded, torch.float64)
                rows.append(_accuracy_row(row, fn, rounded, want, dname, ours=name.startswith(("ours", "triton"))))
    return rows


def run_inputs_rounded(xs: dict, dtype: torch.dtype) -> dict:
    keep = {"state"} | ({"w", "u"} if "r" not in xs else set())
    return {k: x if k in keep else x.to(dtype).float() for k, x in xs.items()}


def _reference(op: str):
    from mmrwkv.kernels import reference

    return lambda **x: getattr(reference, op)(**x)


def _accuracy_row(row: dict, fn, xs: dict, want: dict, dname: str, *, ours: bool) -> dict:
    start = time.perf_counter()
    try:
        got = run_grads(lambda **x: fn(row["op"], **x), xs, DTYPES[dname])
    except Exception as err:  # a backend's failure is a result of the report, not its end
        return {**row, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}", "counts": ours}
    errs = errors(got, want)
    tol = TOLERANCE["fp32-long" if row["strong"] and dname == "fp32" else dname]
    worst = max(e["rel"] for e in errs.values())
    seconds = round(time.perf_counter() - start, 2)
    return {**row, "errors": errs, "worst_rel": worst, "tol": tol, "ok": worst < tol, "counts": ours, "s": seconds}


def timing(found: dict, dry: bool, budget: Budget, device: str, rows: list) -> list[dict[str, Any]]:
    """Forward and forward+backward medians at the target shape; errors of each backend against ours."""
    b, t, c, n, dname = (1, 64, 32, 16, "fp32") if dry else (8, 4096, 4096, 64, "bf16")
    xs = make_inputs("wkv7", b, t, c // n, n, device)
    ours = None
    for name, (fn, why) in found.items():
        row = {"backend": name, "B": b, "T": t, "C": c, "N": n, "dtype": dname}
        if fn is None:
            rows.append({**row, "skipped": why})
            continue
        if budget.left() <= MIN_LEFT_S.get(name, 30.0):
            rows.append({**row, "skipped": "time budget"})
            continue
        try:
            row.update(_time_backend(_bind_op(fn, "wkv7"), xs, DTYPES[dname], dry))
            got = row.pop("outputs")
        except Exception as err:
            rows.append({**row, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"})
            continue
        if ours is None and name == "ours":
            ours = got
        elif ours is not None:
            errs = errors(got, ours)
            row["vs_ours_worst_rel"] = max(e["rel"] for e in errs.values())
            row["vs_ours"] = errs
        rows.append(row)
        del got
    return rows


def _bind_op(fn, op: str):
    return lambda **x: fn(op, **x)


def _time_backend(fn, xs: dict, dtype: torch.dtype, dry: bool) -> dict[str, Any]:
    reps = 1 if dry else 5
    start = time.perf_counter()
    outputs = run_grads(fn, xs, dtype)  # also the first call: builds, compiles, autotunes
    first = time.perf_counter() - start
    leaves = {k: (x if k == "state" else x.to(dtype)).detach().requires_grad_() for k, x in xs.items()}
    gy, gs = torch.randn_like(outputs["y"]), torch.randn_like(outputs["state"])

    def fwd_bwd():
        y, s = fn(**leaves)
        torch.autograd.backward((y, s), (gy, gs))
        for x in leaves.values():
            x.grad = None

    def fwd():
        with torch.no_grad():
            fn(**leaves)

    return {"first_call_s": round(first, 2), "fwd_bwd_ms": _median_ms(fwd_bwd, reps), "fwd_ms": _median_ms(fwd, reps),
            "outputs": outputs}  # fmt: skip


def _median_ms(fn, reps: int) -> float:
    """Median of `reps` timed calls after one warm-up: CUDA events on a GPU, the wall clock on CPU."""
    fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def start_ptxas(dry: bool) -> list[subprocess.Popen] | str:
    """nvcc -Xptxas -v of every .cu for this GPU's architecture, started in the background (parallel)."""
    if dry:
        return "dry run: nothing compiled for the GPU"
    from torch.utils.cpp_extension import CUDA_HOME

    from mmrwkv.kernels import cuda

    major, minor = torch.cuda.get_device_capability(0)
    nvcc = Path(CUDA_HOME or "/usr/local/cuda") / "bin" / "nvcc"
    procs = []
    for src in sorted(cuda.SOURCE_DIR.glob("*.cu")):
        defines = ["-DMMRWKV_N=64", f"-DMMRWKV_CHUNK={cuda.CHUNK}", f"-I{cuda.SOURCE_DIR}"]
        cmd = [str(nvcc), "-c", "-O3", "-std=c++17", f"-arch=sm_{major}{minor}", *defines, "-Xptxas", "-v"]
        cmd += [str(src), "-o", os.devnull]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def collect_ptxas(procs: list[subprocess.Popen] | str) -> list[dict[str, Any]] | str:
    """Per kernel: registers, stack, spill stores and loads, shared memory (bytes)."""
    if isinstance(procs, str):
        return procs
    from mmrwkv.kernels import cuda

    rows = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            return f"nvcc failed: {out.strip().splitlines()[-1:]}"
        rows += [{k: v for k, v in row.items() if k != "entry"} for row in cuda.ptxas_usage(out)]
    return rows


def environment(dry: bool) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": dry}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
    for name in ("triton", "fla"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fla warns at import without a GPU
                env[name] = __import__(name).__version__
        except Exception as err:  # absent or broken: the report says which
            env[name] = f"not importable: {type(err).__name__}"
    return env


def print_section(name: str, rows: Any) -> None:
    print(f"\n==== {name} ====", flush=True)
    if isinstance(rows, (str, dict)):
        print(rows if isinstance(rows, str) else json.dumps(rows))
        return
    for row in rows:
        print(_line(name, row), flush=True)


def _line(section: str, row: dict) -> str:
    if section == "ptxas":
        return (f"{row['kernel']:<30} {row['arch']}  regs {row.get('registers')}  stack {row.get('stack')}  "
                f"spill st/ld {row.get('spill_stores')}/{row.get('spill_loads')}  smem {row.get('smem')}")  # fmt: skip
    if section == "accuracy":
        head = f"{row['backend']:<10} {row['op']} T={row['T']:<5}{' strong' if row['strong'] else '       '}"
    else:
        head = f"{row['backend']:<10} B{row['B']} T{row['T']} C{row['C']} N{row['N']}"
    head += f" {row['dtype']}"
    if "skipped" in row or "error" in row:
        return f"{head}  {'SKIPPED: ' + row['skipped'] if 'skipped' in row else 'ERROR: ' + row['error']}"
    if section == "accuracy":
        worst = max(row["errors"].items(), key=lambda kv: kv[1]["rel"])
        mark = "ok  " if row["ok"] else ("FAIL" if row["counts"] else "off ")
        where = f"({worst[0]}, abs {worst[1]['abs']:.1e})"
        return f"{head}  {mark} worst rel {row['worst_rel']:.1e} {where} tol {row['tol']:.0e}"
    vs = f"  vs ours worst rel {row['vs_ours_worst_rel']:.1e}" if "vs_ours_worst_rel" in row else ""
    times = f"fwd {row['fwd_ms']:9.2f} ms  fwd+bwd {row['fwd_bwd_ms']:9.2f} ms"
    return f"{head}  {times}  first call {row['first_call_s']} s{vs}"


def failures(report: dict) -> list[str]:
    """Our kernels' failures: a build that does not work, an error, or a row over its tolerance."""
    bad = []
    for row in report.get("accuracy", []):
        if row.get("counts") and ("error" in row or row.get("ok") is False):
            bad.append(f"accuracy {row['backend']} {row['op']} T={row['T']} {row['dtype']}")
    for row in report.get("timing", []):
        if row["backend"].startswith(("ours", "triton")) and "error" in row:
            bad.append(f"timing {row['backend']}: {row['error']}")
        elif row["backend"] == "ours" and "skipped" in row and row["skipped"] != "time budget":
            bad.append(f"ours unavailable: {row['skipped']}")
    spills = [r for r in report.get("ptxas", []) if isinstance(r, dict) and r.get("spill_stores")]
    bad += [f"ptxas: {r['kernel']} spills {r['spill_stores']} B" for r in spills]
    return bad


def _section(report: dict, name: str, fn, out: Path) -> None:
    """Runs one section, prints it and rewrites the JSON (a run cut short keeps what it finished).

    Table sections (a list in the report already) print their rows as they come (see `flush` in main).
    """
    start = time.perf_counter()
    progressive = isinstance(report.get(name), list)
    if progressive:
        print(f"\n==== {name} ====", flush=True)
    report[name] = fn()
    report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
    if not progressive:
        print_section(name, report[name])
    (out / "check_gpu.json").write_text(json.dumps(report, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmrwkv.kernels.check_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "build/check_gpu", help="folder for check_gpu.json")
    parser.add_argument("--budget", type=float, default=390.0, help="seconds; later sections are skipped past it")
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny shapes, chunked + Triton interpreter")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("check_gpu: torch sees no CUDA GPU; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget, device = Budget(args.budget), "cpu" if args.dry_run else "cuda"
    report: dict[str, Any] = {"environment": environment(args.dry_run)}
    print_section("environment", report["environment"])
    procs = start_ptxas(args.dry_run)
    found: dict[str, Any] = {}

    class Rows(list):
        """A table of the report that prints and saves each row as it is appended."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def append(self, row: dict) -> None:
            super().append(row)
            print(_line(self.name, row), flush=True)
            (out / "check_gpu.json").write_text(json.dumps(report, indent=1, default=str))

    def build() -> dict[str, str]:
        found.update(backends(args.dry_run))  # ours builds here (head size 64; wkv4 shares that build)
        return {k: "ok" if fn else f"unavailable: {why}" for k, (fn, why) in found.items()}

    _section(report, "build", build, out)
    for name, fn in (("accuracy", accuracy), ("timing", timing)):
        rows = report.setdefault(name, Rows(name))
        _section(report, name, lambda fn=fn, rows=rows: fn(found, args.dry_run, budget, device, rows), out)
    _section(report, "ptxas", lambda: collect_ptxas(procs), out)
    report["failures"] = failures(report)
    (out / "check_gpu.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\n==== summary ====\nwritten {out / 'check_gpu.json'}; seconds {report['seconds']}")
    print("\n".join(f"FAILED: {f}" for f in report["failures"]) or "all of our kernels within tolerance")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
