"""The native CPU kernels' ISA variants (mmrwkv.kernels.cpu): chosen by what the CPU has, refused in one line where it
cannot run them, and every variant the test machine (or an emulator) can run passes the kernels' standalone test."""

import platform
import shutil
import subprocess

import pytest
import torch

from mmrwkv.kernels import cpu as native

_AVX2_ONLY = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2 abm movbe popcnt"
_SELFTEST = native.SOURCE.parent / "selftest.cpp"


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.delenv(native.ISA_VAR, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


def test_a_cpu_without_avx512_runs_the_avx2_variant_and_refuses_avx512_in_one_line(x86, monkeypatch):
    monkeypatch.setattr(native, "_cpu_flags", lambda: _AVX2_ONLY)
    assert native.variants() == ("avx2", "portable")
    assert native.isa() == "avx2"
    monkeypatch.setenv(native.ISA_VAR, "avx512")
    refused = r"^MMRWKV_CPU_ISA=avx512: this CPU cannot run it \(it runs: avx2, portable\)$"
    with pytest.raises(ValueError, match=refused):
        native.isa()
    monkeypatch.setenv(native.ISA_VAR, "sse9")
    with pytest.raises(ValueError, match="MMRWKV_CPU_ISA=sse9: not one of avx512, avx2, neon, portable"):
        native.isa()
    monkeypatch.setenv(native.ISA_VAR, "portable")
    assert native.isa() == "portable"


def test_a_cpu_without_avx2_or_fma_takes_the_portable_variant(x86, monkeypatch):
    monkeypatch.setattr(native, "_cpu_flags", lambda: _AVX2_ONLY.replace(" fma", ""))
    assert native.variants() == ("portable",) and native.isa() == "portable"


def test_the_default_variant_is_no_higher_than_torchs_own_kernel_level(x86, monkeypatch):
    monkeypatch.setattr(native, "_cpu_flags", lambda: _AVX2_ONLY + " avx512f avx512bw avx512cd avx512dq avx512vl")
    assert native.isa() == "avx512"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert native.isa() == "avx2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert native.isa() == "portable"


def test_aarch64_runs_the_neon_variant(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(native, "_cpu_flags", lambda: "fp asimd evtstrm aes pmull sha1 sha2 crc32")
    monkeypatch.delenv(native.ISA_VAR, raising=False)
    assert native.variants() == ("neon",) and native.isa() == "neon"
    assert "-march=armv8-a" in native.build_flags("neon")


def _selftest(compiler: str, flags: list[str], tmp_path, runner: list[str]) -> str:
    exe = tmp_path / "selftest"
    cmd = [compiler, "-O2", *flags, "-ffp-contract=fast", "-Wno-psabi", "-std=c++17", str(_SELFTEST), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize("variant", native.variants())
def test_the_kernels_pass_their_selftest_on_every_variant_this_cpu_runs(variant, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("no g++ here (the native kernels are not built either)")
    out = _selftest("g++", list(native.VARIANTS[variant][0]), tmp_path, [])
    assert f"selftest {variant} (" in out and out.rstrip().endswith(": ok")


def test_the_aarch64_neon_variant_passes_its_selftest_under_qemu(tmp_path):
    if platform.machine() == "aarch64":
        pytest.skip("an aarch64 machine runs the neon variant natively (the test above)")
    tools = ("aarch64-linux-gnu-g++", "qemu-aarch64")
    if not all(shutil.which(t) for t in tools):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user (apt-get install g++-aarch64-linux-gnu qemu-user)")
    out = _selftest(tools[0], [*native.VARIANTS["neon"][0], "-static"], tmp_path, [tools[1]])
    assert "selftest neon (4 lanes): ok" in out
