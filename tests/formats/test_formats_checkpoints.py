"""The authors' `.pth` files as released: flat state_dicts stored in bf16 (or fp16 after conversion), `ln0` in
block 0 only, RWKV-7's `v0/v1/v2` only in layers > 0, LoRA widths that follow no formula; loaded, run, and
driven through `mmrwkv info / convert / generate`."""

import pytest
import torch

from mmrwkv.checkpoint import load_rwkv, read_official
from mmrwkv.cli import main

C, N, L, V = 128, 64, 3, 65536
H = C // N


def _shapes(version: str) -> dict[str, tuple]:
    """key -> shape of a release checkpoint, in the order the authors' training code saves them."""
    mix = (1, 1, C)
    keys = {"emb.weight": (V, C)}
    for i in range(L):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        if i == 0:
            keys.update({b + "ln0.weight": (C,), b + "ln0.bias": (C,)})
        keys.update({b + p: (C,) for p in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")})
        if version == "7":
            keys.update({a + f"x_{n}": mix for n in "rwkvag"})
            keys.update({a + "w0": mix, a + "w1": (C, 64), a + "w2": (64, C), a + "a0": mix, a + "a1": (C, 64),
                         a + "a2": (64, C)})
            if i > 0:
                keys.update({a + "v0": mix, a + "v1": (C, 32), a + "v2": (32, C)})
            keys.update({a + "g1": (C, 128), a + "g2": (128, C), a + "k_k": mix, a + "k_a": mix, a + "r_k": (H, N)})
        elif version == "6":
            keys.update({a + f"time_maa_{n}": mix for n in "xwkvrg"})
            keys.update({a + "time_maa_w1": (C, 5 * 32), a + "time_maa_w2": (5, 32, C), a + "time_decay": mix,
                         a + "time_decay_w1": (C, 64), a + "time_decay_w2": (64, C), a + "time_faaaa": (H, N)})
        elif version == "5.2":
            keys.update({a + f"time_mix_{n}": mix for n in "kvrg"})
            keys.update({a + "time_decay": (H, N), a + "time_faaaa": (H, N)})
        else:
            keys.update({a + "time_decay": (C,), a + "time_first": (C,)})
            keys.update({a + f"time_mix_{n}": mix for n in "kvr"})
        keys.update({a + f"{n}.weight": (C, C) for n in ("receptance", "key", "value", "output")})
        if version in ("5.2", "6"):
            keys[a + "gate.weight"] = (C, C)
        if version != "4":
            keys.update({a + "ln_x.weight": (C,), a + "ln_x.bias": (C,)})
        ffn = int(3.5 * C) if version in ("5.2", "6") else 4 * C
        keys.update({f + "x_k": mix} if version == "7" else {f + f"time_{'maa' if version == '6' else 'mix'}_{n}": mix
                                                              for n in "kr"})
        keys.update({f + "key.weight": (ffn, C), f + "value.weight": (C, ffn)})
        if version != "7":
            keys[f + "receptance.weight"] = (C, C)
    keys.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return keys


def release_checkpoint(version: str, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values of trained magnitudes, stored in `dtype` like the released files."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in _shapes(version).items():
        if key.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_x.weight", "ln_out.weight")):
            value = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif key.endswith(("time_decay", "w0")):
            value = -1 + torch.randn(shape, generator=gen)
        elif len(shape) == 3 and shape[:2] == (1, 1):
            value = torch.rand(shape, generator=gen)
        elif len(shape) >= 2 and not key.endswith(("time_faaaa", "r_k")):
            value = torch.randn(shape, generator=gen) * (1.5 / shape[-1] ** 0.5)
        else:
            value = 0.5 * torch.randn(shape, generator=gen)
        out[key] = value.to(dtype)
    return out


VERSIONS = ["4", "5.2", "6", "7"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    paths = {}
    for version in VERSIONS:
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            paths[version, name] = folder / f"RWKV-x0{version.replace('.', '')}-test-{name}.pth"
            torch.save(release_checkpoint(version, dtype), paths[version, name])
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
