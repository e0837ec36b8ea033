"""`mmrwkv info`, `mmrwkv convert` and `mmrwkv init` through the CLI entry point."""

from __future__ import annotations

import torch

from mmrwkv.checkpoint import load_rwkv
from mmrwkv.cli import main


def test_info_prints_generation_sizes_and_parameter_count(official_sd, tmp_path, capsys):
    sd = official_sd("7", n_embd=64, head_size=16, layer0_v=False)
    torch.save(sd, tmp_path / "m.pth")
    assert main(["info", str(tmp_path / "m.pth")]) == 0
    out = capsys.readouterr().out
    assert "RWKV-7 (version 7)" in out and "official" in out
    assert "4 x 16" in out and "lora (w, a, v, g)  32, 32, 16, 32" in out
    assert f"parameters         {sum(v.numel() for v in sd.values()):,} " in out


def test_convert_writes_ours_and_back_to_official(official_sd, tmp_path, capsys):
    torch.save(official_sd("6", n_embd=64, head_size=16), tmp_path / "m.pth")
    assert main(["convert", str(tmp_path / "m.pth"), str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth"), "--dtype", "bf16"]) == 0
    model = load_rwkv(tmp_path / "back.pth")
    assert model.config.version == "6" and model.emb.weight.dtype == torch.bfloat16
    assert "wrote" in capsys.readouterr().out


def test_init_writes_a_named_size_and_bad_files_exit_with_code_2(tmp_path, capsys):
    assert main(["init", "v5-tiny", str(tmp_path / "tiny")]) == 0
    assert load_rwkv(tmp_path / "tiny").config.version == "5.2"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["info", str(tmp_path / "junk.pth")]) == 2
    assert "junk.pth" in capsys.readouterr().err


def test_info_of_a_named_size_needs_no_file(capsys):
    assert main(["info", "v7-0.1b"]) == 0
    out = capsys.readouterr().out
    assert "named size" in out and "lora (w, a, v, g)  64, 64, 32, 128" in out and "(0.191 B)" in out
