"""`--device` names a device this machine lacks: one error line (no CUDA traceback from deep in a load)."""

import pytest
import torch

from mmrwkv.cli import check_device, main
from mmrwkv.errors import ConfigError


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--checkpoint", "runs/x/final", "--prompt", "hi", "--device", "cuda"],
        ["bench", "wkv", "--device", "cuda", "--T", "64", "--C", "64"],
        ["demo", "--random-tiny", "--device", "cuda"],
    ],
    ids=["generate", "bench-wkv", "demo"],
)
def test_cuda_without_a_gpu_is_one_error_line(argv, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device 'cuda': no CUDA GPU is visible here") and "--device cpu" in err


def test_device_index_and_names_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    check_device("cpu")
    check_device(None)
    with pytest.raises(ConfigError, match=r"--device 'cuda:2': this machine has 2 CUDA GPU\(s\) \(cuda:0..cuda:1\)"):
        check_device("cuda:2")
    with pytest.raises(ConfigError, match="--device 'gpu0': not a device name"):
        check_device("gpu0")


def test_a_bad_wkv_backend_in_the_environment_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setenv("MMRWKV_WKV_BACKEND", "tritonn")
    argv = ["bench", "chat", "--turns", "1", "--repeats", "1", "--answer-tokens", "1", "--layers", "1", "--embd", "32"]
    assert main([*argv, "--head-size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MMRWKV_WKV_BACKEND='tritonn' is not a WKV backend") and "Traceback" not in err
    # still a ValueError for callers of the kernel API
    from mmrwkv.kernels import resolve_backend

    with pytest.raises(ValueError, match="tritonn"):
        resolve_backend(None, torch.device("cpu"), "wkv7")
