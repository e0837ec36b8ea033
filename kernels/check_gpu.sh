#!/usr/bin/env bash
# One command for a GPU machine (target: one H100, under 5 minutes): build the CUDA WKV kernels, run the
# GPU tests, print a direct timing of the v7 target shape (B=8 T=4096 C=4096 head 64 bf16, forward+backward;
# target <= 17 ms on an H100) and of fla's chunk_rwkv7 when installed, the `mmrwkv bench wkv` tables, then
# compute-sanitizer memcheck/racecheck runs on tiny shapes when the toolkit has it.
#   usage: kernels/check_gpu.sh            (from anywhere; PYTHON=... to pick the interpreter)
# Exit status: non-zero when the build or a test fails; benchmark failures are reported and counted too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
failures=0
step() { printf '\n==== %s ====\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; failures=$((failures + 1)); }

step "1/6 environment"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
    echo "no NVIDIA GPU visible (nvidia-smi missing or failing): nothing to check here" >&2
    exit 2
fi
if [[ -z "${CUDA_HOME:-}" ]]; then
    for dir in /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-12; do
        if [[ -x "$dir/bin/nvcc" ]]; then export CUDA_HOME="$dir"; break; fi
    done
fi
if [[ -z "${CUDA_HOME:-}" ]] && command -v nvcc >/dev/null; then
    CUDA_HOME="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
    export CUDA_HOME
fi
if [[ -z "${CUDA_HOME:-}" || ! -x "$CUDA_HOME/bin/nvcc" ]]; then
    echo "nvcc not found: install the CUDA toolkit or set CUDA_HOME" >&2
    exit 2
fi
echo "CUDA_HOME=$CUDA_HOME"
"$CUDA_HOME/bin/nvcc" --version | tail -n 2
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

step "2/6 build (first use compiles into ~/.cache/mmrwkv/kernels)"
"$PY" - <<'EOF'
import time

from mmrwkv.kernels import cuda

start = time.perf_counter()
ok, reason = cuda.is_available()
if not ok:
    raise SystemExit(f"CUDA WKV kernels unavailable: {reason}")
print(f"head size 64 built/loaded in {time.perf_counter() - start:.1f} s; cache {cuda.cache_dir()}")
EOF

step "3/6 GPU tests (pytest -m gpu tests/kernels)"
"$PY" -m pytest -q -p no:cacheprovider -m gpu --timeout 300 tests/kernels || fail "GPU tests"

step "4/6 direct timing: v7 B=8 T=4096 C=4096 head 64 bf16, forward+backward"
timeout 240 "$PY" - <<'EOF' || fail "direct timing"
import statistics

import torch

from mmrwkv.kernels import cuda
from mmrwkv.kernels.reference import random_inputs

B, T, C, N = 8, 4096, 4096, 64
torch.manual_seed(0)
x = random_inputs("wkv7", B, T, C // N, N, dtype=torch.bfloat16, device="cuda")
leaves = {name: t.requires_grad_() for name, t in x.items()}
gy = torch.randn(B, T, C // N, N, device="cuda", dtype=torch.bfloat16)
gs = torch.randn_like(x["state"])


def time_ms(fn, backward=True, reps=5):
    times = []
    for i in range(reps + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y, s = fn()
        if backward:
            torch.autograd.backward((y, s), (gy, gs))
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def ours():
    return cuda.wkv7(**leaves)


print(f"mmrwkv cuda wkv7 fwd+bwd: {time_ms(ours):8.2f} ms   (H100 target <= 17 ms)")
with torch.no_grad():
    print(f"mmrwkv cuda wkv7 fwd    : {time_ms(ours, backward=False):8.2f} ms")
try:
    from fla.ops.rwkv7 import chunk_rwkv7
except ImportError:
    print("fla chunk_rwkv7: not timed (fla is not importable)")
else:
    # fla keeps the state as [key, value]: the transpose of ours
    s_kv = x["state"].detach().transpose(-1, -2).contiguous().requires_grad_()
    args = {n: leaves[n] for n in "rwkvab"}

    def fla():
        return chunk_rwkv7(**args, scale=1.0, initial_state=s_kv, output_final_state=True)

    print(f"fla chunk_rwkv7 fwd+bwd : {time_ms(fla):8.2f} ms")
print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
EOF

step "5/6 mmrwkv bench wkv --device cuda"
bench() {
    echo "+ mmrwkv bench wkv --device cuda $*"
    timeout 100 "$PY" -m mmrwkv.cli bench wkv --device cuda "$@" || fail "bench wkv $*"
}
bench --op wkv7 --B 8 --T 4096 --C 4096 --head-size 64 --dtype bf16 --ref-T 64 --rounds 3
bench --op wkv6 --B 4 --T 2048 --C 2048 --head-size 64 --dtype bf16 --ref-T 64 --rounds 3
bench --op wkv4 --B 4 --T 2048 --C 2048 --dtype fp32 --ref-T 64 --rounds 3

step "6/6 compute-sanitizer memcheck + racecheck on tiny shapes (both backward paths)"
SANITIZER="$CUDA_HOME/bin/compute-sanitizer"
if [[ ! -x "$SANITIZER" ]]; then
    echo "compute-sanitizer not found under $CUDA_HOME/bin: skipped"
else
    tiny="$(mktemp --suffix=.py)"
    trap 'rm -f "$tiny"' EXIT
    cat >"$tiny" <<'EOF'
import torch

from mmrwkv.kernels import cuda
from mmrwkv.kernels.reference import random_inputs

for op in ("wkv7", "wkv6", "wkv4"):
    for dtype in (torch.float32, torch.bfloat16):
        x = random_inputs(op, 2, 40, 2, 64, dtype=dtype, device="cuda")
        if op != "wkv4":
            # strong decays in the second chunk: that chunk is replayed, the others are stepped back
            x["w"][:, 16:32] = -3.0
        leaves = {name: t.requires_grad_() for name, t in x.items()}
        y, s = getattr(cuda, op)(**leaves)
        torch.autograd.backward((y, s), (torch.randn_like(y), torch.randn_like(s)))
torch.cuda.synchronize()
print("sanitized run finished")
EOF
    for tool in memcheck racecheck; do
        echo "+ compute-sanitizer --tool $tool"
        # no caching allocator: memcheck then sees the exact bounds of every buffer
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 "$SANITIZER" --tool "$tool" --kernel-name kns=wkv \
            --error-exitcode 1 "$PY" "$tiny" || fail "compute-sanitizer $tool"
    done
fi

step "done"
if ((failures > 0)); then
    echo "$failures step(s) failed" >&2
    exit 1
fi
echo "all checks passed"
