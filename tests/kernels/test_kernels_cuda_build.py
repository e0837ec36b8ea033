"""Building the CUDA WKV kernels: nvcc accepts every .cu for sm_80 and sm_90, the torch binding builds for
CUDA without a GPU (slow), builds are cached by content, failures and a missing GPU come with a reason."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mmrwkv.kernels import cuda

CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda-13.0"


def nvcc() -> str:
    path = shutil.which("nvcc") or str(Path(CUDA_HOME) / "bin" / "nvcc")
    if not Path(path).exists():
        pytest.skip("nvcc is not installed")
    return path


def test_every_cu_file_compiles_with_nvcc_for_sm80_and_sm90_without_register_spills(tmp_path):
    """Also links the torch-free sanitizer harness (check_gpu.sh runs it under compute-sanitizer)."""
    arch = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]
    sources = sorted(cuda.SOURCE_DIR.glob("*.cu"))
    assert [s.name for s in sources] == ["harness.cu", "wkv4.cu", "wkv6.cu", "wkv7.cu"]
    procs = [
        subprocess.Popen(
            [
                nvcc(),
                "-c",
                "-O3",
                "-std=c++17",
                *arch,
                "-DMMRWKV_N=64",
                "-Xptxas",
                "-v",
                f"-I{cuda.SOURCE_DIR}",
                str(src),
                "-o",
                str(tmp_path / f"{src.stem}.o"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for src in sources
    ]
    for src, proc in zip(sources, procs, strict=True):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"nvcc failed on {src.name}:\n{out}"
        assert (tmp_path / f"{src.stem}.o").stat().st_size > 0
        if src.name == "harness.cu":
            continue
        usage = cuda.ptxas_usage(out)
        # forward and backward, fp32 and bf16, two architectures
        assert len(usage) == 8, f"{src.name}: unexpected ptxas report:\n{out}"
        for row in usage:
            what = f"{src.name} {row['kernel']} {row['arch']}: {row}"
            assert row["spill_stores"] == 0 and row["spill_loads"] == 0, what
            assert row["registers"] <= 255 and row["smem"] <= 48 * 1024, what
    objects = [str(tmp_path / f"{src.stem}.o") for src in sources]
    link = subprocess.run([nvcc(), *arch, *objects, "-o", str(tmp_path / "harness")], capture_output=True, text=True)
    assert link.returncode == 0, f"linking the sanitizer harness failed:\n{link.stdout}{link.stderr}"


def test_ptxas_report_parser_reads_registers_spills_and_shared_memory():
    log = (
        "ptxas info    : Compiling entry function '_ZN3_GLOBAL__20wkv7_backward_kernelI13__nv_bfloat16EEviiPKT_' "
        "for 'sm_90'\n"
        "ptxas info    : Function properties for _ZN3_GLOBAL__20wkv7_backward_kernelI13__nv_bfloat16EEviiPKT_\n"
        "    704 bytes stack frame, 1060 bytes spill stores, 972 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 2432 bytes smem\n"
    )
    [row] = cuda.ptxas_usage(log)
    assert row["kernel"] == "wkv7_backward_kernel<bf16>" and row["arch"] == "sm_90"
    assert (row["registers"], row["stack"], row["spill_stores"], row["spill_loads"], row["smem"]) == (
        255,
        704,
        1060,
        972,
        2432,
    )


@pytest.mark.slow
def test_torch_binding_builds_and_registers_the_ops_for_cuda(tmp_path, monkeypatch):
    nvcc()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    monkeypatch.setenv("CUDA_HOME", CUDA_HOME)
    monkeypatch.setattr("torch.utils.cpp_extension.CUDA_HOME", CUDA_HOME)
    ops = cuda._build(48, emulate=False)
    schema = str(ops.wkv7_backward.default._schema)
    assert schema.startswith("mmrwkv_wkv_cuda_n48::wkv7_backward(Tensor r, Tensor w")
    assert list(tmp_path.glob("mmrwkv/kernels/mmrwkv_wkv_cuda_n48-*/mmrwkv_wkv_cuda_n48.so"))


def test_is_available_gives_a_reason_when_it_cannot_run():
    ok, reason = cuda.is_available()
    if torch.cuda.is_available():
        assert ok and reason == ""
    else:
        assert not ok and "CUDA GPU" in reason


def test_build_directory_name_changes_when_a_source_changes(tmp_path, monkeypatch):
    copy = tmp_path / "cuda"
    shutil.copytree(cuda.SOURCE_DIR, copy)
    monkeypatch.setattr(cuda, "SOURCE_DIR", copy)
    before = cuda._digest(["-DMMRWKV_N=64"])
    assert cuda._digest(["-DMMRWKV_N=64"]) == before
    assert cuda._digest(["-DMMRWKV_N=32"]) != before
    (copy / "wkv7.cu").write_text((copy / "wkv7.cu").read_text() + "\n// edited\n")
    assert cuda._digest(["-DMMRWKV_N=64"]) != before


def test_a_failed_build_raises_a_clear_error_and_is_not_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda, "SOURCE_DIR", tmp_path / "missing")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cuda, "_failed", {})
    calls = []
    real_build = cuda._build
    monkeypatch.setattr(cuda, "_build", lambda n, emulate: calls.append(n) or real_build(n, emulate))
    with pytest.raises(RuntimeError, match=r"building the emulated WKV kernels \(N=5\) failed"):
        cuda.load_ops(5, emulate=True)
    with pytest.raises(RuntimeError, match="N=5"):
        cuda.load_ops(5, emulate=True)
    assert calls == [5]


@pytest.mark.parametrize("bad", [0, 129, 64.0])
def test_unsupported_head_sizes_are_rejected_before_building(bad):
    with pytest.raises(ValueError, match="head size"):
        cuda.load_ops(bad, emulate=True)
