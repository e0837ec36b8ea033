"""The package's ln0 fold in a bf16/fp16 file's dtype (`RWKV.ln0_dtype`) survives our format: an official file
converted to ours in fp32, a multimodal model whose backbone starts from the file, and their saves all give the
logits that `rwkv==0.8.32` (`cpu fp32`) gives on the original file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mmrwkv.checkpoint import convert, load_backbone_weights, load_rwkv, save_rwkv
from mmrwkv.errors import ConfigError
from mmrwkv.rwkv import RWKV, RWKVConfig

from .conftest import make_official

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 200]
REL_TOL = 1e-4

ORACLE = r"""
import json, sys, torch
from rwkv.model import RWKV
for path, out in json.loads(open(sys.argv[1]).read()):
    model = RWKV(model=path, strategy="cpu fp32", verbose=False)
    full, _ = model.forward(json.loads(sys.argv[2]), None, full_output=True)
    torch.save(full.float().clone(), out)
"""


def _file(version: str, dtype: torch.dtype, ln0: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    sd = {k: t.to(dtype) for k, t in make_official(version, vocab=512, n_embd=64, head_size=32).items()}
    return {k: t.to(ln0) if ln0 and k.startswith("blocks.0.ln0.") else t for k, t in sd.items()}


CASES = {
    "6-bf16": ("bfloat16", lambda: _file("6", torch.bfloat16)),
    "4-fp16": ("float16", lambda: _file("4", torch.float16)),
    "5.2-bf16-ln0-fp32": ("bfloat16", lambda: _file("5.2", torch.bfloat16, torch.float32)),
}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """name -> (path of the official file, the package's full-sequence logits on it); one package process."""
    folder = tmp_path_factory.mktemp("ln0_roundtrip")
    jobs, paths = [], {}
    for name, (_, make) in CASES.items():
        paths[name] = folder / f"{name}.pth"
        torch.save(make(), paths[name])
        jobs.append([str(paths[name])[:-4], str(folder / f"{name}.out")])
    (folder / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "RWKV_JIT_ON": "0", "RWKV_CUDA_ON": "0", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", ORACLE, str(folder / "jobs.json"), json.dumps(TOKENS)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rwkv package failed:\n{proc.stderr[-4000:]}"
    return {name: (paths[name], torch.load(folder / f"{name}.out", weights_only=True)) for name in CASES}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _logits(backbone) -> torch.Tensor:
    torch.set_num_threads(1)
    with torch.no_grad():
        return backbone.eval()(torch.tensor([TOKENS]))[0][0]


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_save_of_a_half_file_keeps_the_package_ln0(name, oracle, tmp_path):
    path, ref = oracle[name]
    ours = convert(path, tmp_path / "ours", dtype=torch.float32)
    assert json.loads((ours / "config.json").read_text())["dtype"] == "float32"
    model = load_rwkv(ours)
    assert model.emb.weight.dtype == torch.float32 and model.config.ln0_dtype == CASES[name][0]
    assert rel_err(_logits(model), ref) <= REL_TOL
    # and again through a second save of ours, and back to an fp32 load of the half-precision save
    again = load_rwkv(save_rwkv(model, tmp_path / "again"))
    assert rel_err(_logits(again), ref) <= REL_TOL
    half = load_rwkv(convert(ours, tmp_path / "half", dtype=getattr(torch, CASES[name][0])), dtype=torch.float32)
    assert rel_err(_logits(half), ref) <= REL_TOL


def test_without_the_rounding_the_logits_would_differ(oracle):
    """What the tests above guard: an fp32 model of the bf16 file without ln0_dtype is measurably off."""
    path, ref = oracle["6-bf16"]
    model = load_rwkv(path, dtype=torch.float32)
    model.ln0_dtype = None
    assert rel_err(_logits(model), ref) > 10 * REL_TOL


def test_multimodal_backbone_from_a_half_file_keeps_the_package_ln0(oracle, tmp_path):
    from mmrwkv.config import load_config
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import train_bpe
    from mmrwkv.training.build import build_model

    path, ref = oracle["6-bf16"]
    # a tokenizer whose ids all have rows in the 512-row file (training refuses one with more ids than rows)
    train_bpe(["what colour is the shape"] * 20, 300, tmp_path / "tokenizer.json")
    overrides = [
        f"model.checkpoint={path}",
        f"model.tokenizer={tmp_path / 'tokenizer.json'}",
        "stages=[]",
        "encoders.image={name: tiny_cnn, image_size: 16, width: 8, grid: 2}",
    ]
    model = build_model(load_config("recipes/easy_vqa.yaml", overrides))
    assert model.backbone.ln0_dtype == torch.bfloat16
    assert rel_err(_logits(model.backbone), ref) <= REL_TOL
    loaded = MultimodalRWKV.load(model.save(tmp_path / "mm"))
    assert loaded.backbone.ln0_dtype == torch.bfloat16
    assert rel_err(_logits(loaded.backbone), ref) <= REL_TOL


def test_load_backbone_weights_takes_the_files_ln0_dtype(oracle):
    path, ref = oracle["4-fp16"]
    target = RWKV(RWKVConfig.from_dict({**load_rwkv(path).config.to_dict(), "ln0_dtype": None}))
    load_backbone_weights(target, path)
    assert target.ln0_dtype == torch.float16
    assert rel_err(_logits(target), ref) <= REL_TOL


def test_ln0_dtype_other_than_bf16_or_fp16_is_refused():
    with pytest.raises(ConfigError, match=r"RWKVConfig.ln0_dtype: 'float32'"):
        RWKVConfig(version="6", n_layer=1, n_embd=64, vocab_size=16, head_size=32, ln0_dtype="float32")
    with pytest.raises(ConfigError, match=r"RWKVConfig.ln0_dtype: 'bfloat16' is for RWKV-4/5/6"):
        RWKVConfig(version="7", n_layer=1, n_embd=64, vocab_size=16, head_size=32, ln0_dtype="bfloat16")
    model = RWKV(RWKVConfig(version="6", n_layer=1, n_embd=64, vocab_size=16, head_size=32))
    with pytest.raises(ValueError, match="ln0_dtype"):
        model.ln0_dtype = torch.float32
