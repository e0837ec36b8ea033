"""The kernel sources under ThreadSanitizer and AddressSanitizer (+ UBSan), through the CPU emulator.

kernels/cuda/harness.cu (torch-free; the same file check_gpu.sh builds with nvcc for compute-sanitizer) runs every
op, fp32 and bf16, forward and backward through both backward paths. The emulator runs a block's threads as real
threads and __shared__ arrays as memory they share, so a missing barrier is a data race ThreadSanitizer reports.
Builds are cached by the content of the sources (cuda.cache_dir()), so they compile once per change.
"""

import os
import shutil
import subprocess

import pytest

from mmrwkv.kernels import cuda

SANITIZERS = {
    "thread": ["-fsanitize=thread"],
    "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"],
}
REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def build_command(kind: str, out: str) -> list[str]:
    src = cuda.SOURCE_DIR
    emulated = [str(src / "emu" / f"wkv{v}_emu.cpp") for v in (4, 6, 7)]
    flags = ["-std=c++20", "-O0", "-g", "-pthread", "-DMMRWKV_EMU", "-DMMRWKV_N=16", f"-I{src}", *SANITIZERS[kind]]
    return ["g++", *flags, "-x", "c++", str(src / "harness.cu"), "-x", "none", *emulated, "-o", out]


@pytest.fixture(scope="module")
def binaries():
    """Both sanitizer builds of the harness (compiled in parallel, or taken from the cache)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    paths, procs = {}, {}
    for kind in SANITIZERS:
        folder = cuda.cache_dir() / f"harness-{kind}-{cuda._digest(build_command(kind, ''))}"
        paths[kind] = folder / "harness"
        if not paths[kind].exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = str(paths[kind]) + f".{os.getpid()}.tmp"
            procs[kind] = (subprocess.Popen(build_command(kind, tmp), stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True), tmp)  # fmt: skip
    for kind, (proc, tmp) in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"the {kind} sanitizer build failed:\n{out[-3000:]}"
        os.replace(tmp, paths[kind])
    return paths


@pytest.mark.parametrize("kind", list(SANITIZERS))
def test_emulated_kernels_run_clean_under_the_sanitizer(binaries, kind):
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    run = subprocess.run([str(binaries[kind])], capture_output=True, text=True, timeout=300, env=env)
    output = run.stdout + run.stderr
    if kind == "thread" and "unexpected memory mapping" in output:
        pytest.skip("ThreadSanitizer cannot run on this kernel's memory layout (ASLR); see its message")
    found = [r for r in REPORTS if r in output]
    assert run.returncode == 0 and not found, f"{kind} sanitizer: {found}\n{output[-4000:]}"
    assert "wkv7, wkv6, wkv4 x fp32, bf16 (N=16, T=37): ok" in run.stdout


@pytest.mark.slow
def test_thread_sanitizer_reports_the_race_of_a_removed_barrier(tmp_path):
    """The negative control: without backward's end-of-step barrier, the next step's writes of the shared copy of
    the state gradient race with this step's reads, and the ThreadSanitizer build says so."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    copy = tmp_path / "cuda"
    shutil.copytree(cuda.SOURCE_DIR, copy)
    source = (copy / "wkv7.cu").read_text()
    barrier = "__syncthreads();  // G and dsa are rewritten by the next step"
    assert source.count(barrier) == 1
    (copy / "wkv7.cu").write_text(source.replace(barrier, ""))
    cmd = [part.replace(str(cuda.SOURCE_DIR), str(copy)) for part in build_command("thread", str(tmp_path / "h"))]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([str(tmp_path / "h")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1"))  # fmt: skip
    if "unexpected memory mapping" in run.stderr:
        pytest.skip("ThreadSanitizer cannot run on this kernel's memory layout (ASLR)")
    assert run.returncode != 0 and "WARNING: ThreadSanitizer: data race" in run.stderr
    assert "wkv7_backward_kernel" in run.stderr
