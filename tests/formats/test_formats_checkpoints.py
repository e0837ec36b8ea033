"""The authors' `.pth` files as released: flat state_dicts stored in bf16 (or fp16 after conversion), `ln0` in
block 0 only, RWKV-7's `v0/v1/v2` only in layers > 0, LoRA widths that follow no formula; loaded, run, and
driven through `mmrwkv info / convert / generate`."""

import pytest
import torch

from mmrwkv.checkpoint import load_rwkv, read_official
from mmrwkv.cli import main

L, N = 3, 64
VERSIONS = ["4", "5.2", "6", "7"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, release_sd):
    folder = tmp_path_factory.mktemp("release")
    paths = {}
    for version in VERSIONS:
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            paths[version, name] = folder / f"RWKV-x0{version.replace('.', '')}-test-{name}.pth"
            torch.save(release_sd(version, dtype), paths[version, name])
    return paths


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stored", ["bf16", "fp16"])
def test_release_files_load_in_their_dtype_and_match_fp32(files, version, stored):
    torch.set_num_threads(1)
    path = files[version, stored]
    raw = read_official(path)
    model = load_rwkv(path).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[stored]
    assert model.config.version == version and model.config.n_layer == L and model.config.head_size == N
    assert all(p.dtype == dtype for p in model.parameters())
    # the parameters are the file's tensors (reshaped at most), and ln0 stays explicit
    assert torch.equal(model.emb.weight, raw["emb.weight"])
    assert torch.equal(model.blocks[0].ln0.weight, raw["blocks.0.ln0.weight"])
    exact = load_rwkv(path, dtype=torch.float32).eval()
    ids = torch.tensor([[11, 300, 4000, 65529, 0, 23]])
    with torch.no_grad():
        want, _ = exact(ids)
        got, state = model(ids)
        steps, s = [], None
        for t in range(ids.shape[1]):
            out, s = model(ids[:, t : t + 1], s)
            steps.append(out)
    scale = want.abs().max()
    assert torch.isfinite(got).all() and got.dtype == dtype
    assert (got.float() - want).abs().max() / scale < 0.05
    assert (torch.cat(steps, 1).float() - want).abs().max() / scale < 0.05
    assert state.wkv.dtype == torch.float32


@pytest.mark.parametrize("stored", ["bf16", "fp16"])
def test_cli_info_convert_and_generate_on_release_files(files, tmp_path, capsys, stored):
    path = files["7", stored]
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "RWKV-7 (version 7)" in out and "lora (w, a, v, g)  64, 64, 32, 128" in out and "65536" in out
    assert main(["convert", str(path), str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth")]) == 0
    before, after = read_official(path), read_official(tmp_path / "back.pth")
    # the round trip keeps every key (no layer-0 v0/v1/v2 added), shape, dtype and value
    assert set(after) == set(before)
    assert all(after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]) for k in before)
    assert main(["convert", str(path), str(tmp_path / "fp32.pth"), "--dtype", "fp32"]) == 0
    assert read_official(tmp_path / "fp32.pth")["head.weight"].dtype == torch.float32
    capsys.readouterr()
    prompt = "User: hello\n\nAssistant:"
    assert main(["generate", "--checkpoint", str(path), "--prompt", prompt, "--temperature", "0",
                 "--max-tokens", "6"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert main(["generate", "--checkpoint", str(tmp_path / "ours"), "--prompt", prompt, "--max-tokens", "4",
                 "--seed", "1", "--dtype", "fp32"]) == 0


def test_rwkv7_layer0_value_lora_is_optional(files, tmp_path):
    sd = read_official(files["7", "bf16"])
    assert "blocks.0.att.v0" not in sd and "blocks.1.att.v0" in sd
    with_v = dict(sd)
    with_v.update({"blocks.0.att.v0": sd["blocks.1.att.v0"], "blocks.0.att.v1": sd["blocks.1.att.v1"],
                   "blocks.0.att.v2": sd["blocks.1.att.v2"]})
    torch.save(with_v, tmp_path / "with_v.pth")
    a, b = load_rwkv(files["7", "bf16"]).eval(), load_rwkv(tmp_path / "with_v.pth").eval()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(a(ids)[0], b(ids)[0])


@pytest.mark.parametrize("version", ["5.2", "6"])
def test_bonus_stored_as_log_time_first_loads_like_time_faaaa(release_sd, tmp_path, version):
    sd = {k: v.float() for k, v in release_sd(version, torch.float32, vocab=512).items()}
    older = {}
    for key, value in sd.items():
        if key.endswith("time_faaaa"):
            positive = value.abs() + 0.1
            sd[key] = positive
            older[key.replace("time_faaaa", "time_first")] = positive.log()
        else:
            older[key] = value
    torch.save(sd, tmp_path / "new.pth")
    torch.save(older, tmp_path / "old.pth")
    assert main(["info", str(tmp_path / "old.pth")]) == 0
    new, old = load_rwkv(tmp_path / "new.pth").eval(), load_rwkv(tmp_path / "old.pth").eval()
    assert old.config == new.config
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(old(ids)[0], new(ids)[0], rtol=1e-5, atol=1e-5)
