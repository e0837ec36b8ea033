#!/usr/bin/env bash
# One run on a fresh GPU machine without network, under 8 minutes: installs the project offline when
# `import mmrwkv.kernels` fails, then one Python report (kernels/check_gpu.py: the CUDA build, ptxas registers and
# spills, the accuracy table of every kernel against the fp64 reference, the timing table of every backend at
# B8 T4096 C4096 H64 bf16), then compute-sanitizer memcheck / racecheck / synccheck / initcheck over the
# torch-free harness (kernels/cuda/harness.cu), then the GPU tests with the time that is left.
# Five files go to OUT_DIR (default $OUT, else build/check_gpu): check_gpu.json, report.txt, harness_build.txt,
# sanitizers.txt, pytest.txt.
#   usage: kernels/check_gpu.sh [--dry-run] [OUT_DIR]     (PYTHON=... picks the interpreter)
#   --dry-run: CPU only; builds nothing for the GPU; runs the report on tiny shapes (see check_gpu.py).
# Exit status: 0 when everything passed, 1 when a check failed, 2 when the machine cannot run the checks.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT_DIR="${1:-${OUT:-$ROOT/build/check_gpu}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
TOTAL_S=470  # the whole run, build included
export PYTHONUNBUFFERED=1
failures=()
step() { printf '\n==== %s (%d s) ====\n' "$*" "$SECONDS"; }

step "1/5 environment"
if ((DRY == 0)); then
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
        echo "no NVIDIA GPU visible (nvidia-smi missing or failing); use --dry-run on a CPU machine" >&2
        exit 2
    fi
    if [[ -z "${CUDA_HOME:-}" ]]; then
        for dir in /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-12; do
            if [[ -x "$dir/bin/nvcc" ]]; then export CUDA_HOME="$dir"; break; fi
        done
    fi
    if [[ -z "${CUDA_HOME:-}" ]] && command -v nvcc >/dev/null; then
        CUDA_HOME="$(cd "$(dirname "$(readlink -f "$(command -v nvcc)")")/.." && pwd)"
        export CUDA_HOME
    fi
    if [[ -z "${CUDA_HOME:-}" || ! -x "$CUDA_HOME/bin/nvcc" ]]; then
        echo "nvcc not found: install the CUDA toolkit or set CUDA_HOME" >&2
        exit 2
    fi
    echo "CUDA_HOME=$CUDA_HOME"
    "$CUDA_HOME/bin/nvcc" --version | tail -n 1
    CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')"
    # the CUDA build compiles for this GPU only, with every core
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${CAP:0:${#CAP}-1}.${CAP: -1}}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
fi

step "2/5 project importable (offline editable install when it is not)"
if ! "$PY" -c 'import mmrwkv.kernels' 2>/dev/null; then
    UV="$(command -v uv || true)"
    if [[ -x .venv/bin/uv ]]; then UV=.venv/bin/uv; fi
    if [[ -n "$UV" ]]; then
        "$UV" pip install --python "$PY" --offline --no-deps --no-build-isolation -e . || true
    else
        "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . || true
    fi
    if ! "$PY" -c 'import mmrwkv.kernels'; then
        echo "cannot import mmrwkv.kernels, even after an offline 'pip install --no-deps -e .'" >&2
        exit 2
    fi
fi

HARNESS="$(mktemp -d)/harness"
if ((DRY == 0)); then
    # the sanitizer harness builds (without torch) while the report runs
    "$CUDA_HOME/bin/nvcc" -O2 -std=c++17 -arch="sm_$CAP" -Ikernels/cuda kernels/cuda/harness.cu \
        kernels/cuda/wkv4.cu kernels/cuda/wkv6.cu kernels/cuda/wkv7.cu -o "$HARNESS" >"$OUT_DIR/harness_build.txt" 2>&1 &
    harness_pid=$!
fi

step "3/5 report: build, ptxas, accuracy, timing"
args=(--out "$OUT_DIR" --budget $((TOTAL_S - SECONDS - 120)))
((DRY == 1)) && args+=(--dry-run)
timeout $((TOTAL_S - SECONDS - 60)) "$PY" -m mmrwkv.kernels.check_gpu "${args[@]}" 2>&1 | tee "$OUT_DIR/report.txt"
status=${PIPESTATUS[0]}
((status != 0)) && failures+=("report (exit $status; 124: out of time)")

step "4/5 compute-sanitizer over the harness"
SANITIZER="${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer"
if ((DRY == 1)); then
    echo "dry run: skipped (the CPU tests run the harness under ThreadSanitizer and AddressSanitizer)"
elif ! wait "$harness_pid"; then
    failures+=("harness build (see $OUT_DIR/harness_build.txt)")
    tail -n 20 "$OUT_DIR/harness_build.txt"
elif [[ ! -x "$SANITIZER" ]]; then
    echo "compute-sanitizer not found under $CUDA_HOME/bin: skipped"
else
    : >"$OUT_DIR/sanitizers.txt"
    log="$(mktemp)"
    for tool in memcheck racecheck synccheck initcheck; do
        extra=()
        [[ $tool == memcheck ]] && extra=(--leak-check full)
        if timeout 60 "$SANITIZER" --tool "$tool" "${extra[@]}" --error-exitcode 1 "$HARNESS" >"$log" 2>&1; then
            echo "$tool: clean ($(tail -n 1 "$log"))" | tee -a "$OUT_DIR/sanitizers.txt"
        else
            failures+=("compute-sanitizer $tool (see $OUT_DIR/sanitizers.txt)")
            { echo "$tool: FAILED"; tail -n 40 "$log"; } | tee -a "$OUT_DIR/sanitizers.txt"
        fi
    done
fi

step "5/5 GPU tests (pytest -m gpu tests/kernels) with the time left"
left=$((TOTAL_S - SECONDS - 10))
if ((DRY == 1)); then
    echo "dry run: skipped"
elif ((left < 60)); then
    echo "skipped: ${left} s left"
else
    timeout "$left" "$PY" -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels >"$OUT_DIR/pytest.txt" 2>&1
    status=$?
    tail -n 15 "$OUT_DIR/pytest.txt"
    ((status != 0)) && failures+=("GPU tests (exit $status; 124: out of time)")
fi

step "summary"
echo "results in $OUT_DIR; ${SECONDS} s"
if ((${#failures[@]} > 0)); then
    printf 'FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "all checks passed"
