"""Hugging Face and fla checkpoints of the RWKV family: a directory of config.json + safetensors, in and out.

Formats (`detect_format` reads config.json's `model_type` / `architectures`):
    hf-rwkv4   transformers' `RwkvForCausalLM` (model_type "rwkv")
    hf-rwkv5   the RWKV-5 World HF port (`Rwkv5ForCausalLM`, model_type "rwkv5", remote code on the Hub)
    hf-rwkv6   the RWKV-6 HF port (`Rwkv6ForCausalLM`, model_type "rwkv6", remote code on the Hub)
    fla-rwkv7  flash-linear-attention's `RWKV7ForCausalLM` (model_type "rwkv7", also "rwkv7_fla")
Every format holds the official tensors under other names, so import maps each key to its official name (and
shape: fla stores the LoRA matrices transposed, the LoRA biases w0/a0/v0 and most [1, 1, C] vectors as [C]) and
builds the model as an official `.pth` is built; export is the exact inverse, so a file read and written back is
bit-identical. Shapes and the generation come from the tensors (`checkpoint.detect_config`), never from config.json.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import torch

from mmrwkv.checkpoint_files import CONFIG_FILE, WEIGHTS_FILE, replace_dir, unshared
from mmrwkv.errors import CheckpointError

HF_FORMATS = ("hf-rwkv4", "hf-rwkv5", "hf-rwkv6", "fla-rwkv7")
_MODEL_TYPES = {
    "rwkv": "hf-rwkv4",
    "rwkv5": "hf-rwkv5",
    "rwkv6": "hf-rwkv6",
    "rwkv7": "fla-rwkv7",
    "rwkv7_fla": "fla-rwkv7",
}
_ARCHITECTURES = {
    "RwkvForCausalLM": "hf-rwkv4",
    "Rwkv5ForCausalLM": "hf-rwkv5",
    "Rwkv6ForCausalLM": "hf-rwkv6",
    "RWKV7ForCausalLM": "fla-rwkv7",
}
FORMAT_OF_GENERATION = {4: "hf-rwkv4", 5: "hf-rwkv5", 6: "hf-rwkv6", 7: "fla-rwkv7"}
INDEX_FILE = "model.safetensors.index.json"
# transformers' RWKV-4/5 spell out the token-shift mixes; RWKV-6 keeps the official names
_LONG_MIX = {
    "time_mix_k": "time_mix_key",
    "time_mix_v": "time_mix_value",
    "time_mix_r": "time_mix_receptance",
    "time_mix_g": "time_mix_gate",
}
_FLA_TOP = {
    "emb.weight": "model.embeddings.weight",
    "ln_out.weight": "model.norm.weight",
    "ln_out.bias": "model.norm.bias",
    "head.weight": "lm_head.weight",
}
_FLA_PARTS = {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm", "att": "attn", "ffn": "ffn"}
_FLA_PROJ = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj", "ln_x": "g_norm"}
_FLA_LORA = {"0": "2.bias", "1": "0.weight", "2": "2.weight"}
_LORA_KEY = re.compile(r"^([wavg])([012])$")


def read_hf_config(directory: Path) -> dict:
    """config.json of a directory as a dict (CheckpointError naming the file when missing or not JSON)."""
    path = Path(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return meta


def detect_format(directory: str | Path) -> str | None:
    """The HF/fla format of a checkpoint directory (one of HF_FORMATS), or None when config.json names none; a
    transformers config of another model type raises CheckpointError naming it."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        return None
    meta = read_hf_config(directory)
    if meta.get("format") is not None:
        return None
    for arch in meta.get("architectures") or []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    if meta.get("model_type") is not None and meta["model_type"] not in _MODEL_TYPES:
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: a transformers model of type {meta['model_type']!r} "
            f"({', '.join(meta.get('architectures') or []) or 'no architectures'}), not an RWKV; mmrwkv reads "
            f"{', '.join(_ARCHITECTURES)} directories, its own and official .pth files"
        )
    return _MODEL_TYPES.get(meta.get("model_type"))


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF directory: model.safetensors, or the shards its index names."""
    from safetensors.torch import load_file

    directory = Path(directory)
    files = [directory / WEIGHTS_FILE]
    if not files[0].is_file() and (directory / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{directory / INDEX_FILE}: not a safetensors index ({err})") from None
        names = sorted(set(weight_map.values()))
        if any(Path(n).name != n for n in names):
            raise CheckpointError(f"{directory / INDEX_FILE}: shard names must be plain file names, got {names}")
        files = [directory / n for n in names]
    if not files[0].is_file():
        bins = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
        hint = f" (found {', '.join(bins)}: convert them to safetensors first)" if bins else ""
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as err:
            raise CheckpointError(f"{file}: cannot read safetensors (truncated or corrupt?): {err}") from err
    return tensors


def _hf_block_key(rest: str, fmt: str) -> str:
    """`ln0.weight`, `att.time_mix_k`, ... of one block -> the transformers name of that block's tensor."""
    part, _, name = rest.partition(".")
    part = {"ln0": "pre_ln", "att": "attention", "ffn": "feed_forward"}.get(part, part)
    if fmt in ("hf-rwkv4", "hf-rwkv5"):
        name = _LONG_MIX.get(name, name)
    return f"{part}.{name}"


def official_to_hf_key(key: str, fmt: str) -> str:
    """An official key -> its name in a transformers RWKV-4/5/6 file."""
    if key == "head.weight":
        return key
    if key == "emb.weight":
        return "rwkv.embeddings.weight"
    if key.startswith("ln_out."):
        return f"rwkv.{key}"
    _, layer, rest = key.split(".", 2)
    return f"rwkv.blocks.{layer}.{_hf_block_key(rest, fmt)}"


def official_to_fla(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """An official RWKV-7 key and tensor -> fla's name and layout (LoRA transposed, [1, 1, C] -> [C] except x_*)."""
    if key in _FLA_TOP:
        return _FLA_TOP[key], tensor
    _, layer, part, name = key.split(".", 3)
    lora = _LORA_KEY.match(name) if part == "att" else None
    if lora:
        kind, index = lora.groups()
        name = f"{kind}_lora.lora.{_FLA_LORA[index]}"
        tensor = tensor.t() if index != "0" else tensor
    elif part == "att" and name.split(".")[0] in _FLA_PROJ:
        head, _, tail = name.partition(".")
        name = f"{_FLA_PROJ[head]}.{tail}"
    if tensor.dim() == 3 and tensor.shape[:2] == (1, 1) and not (part == "att" and name.startswith("x_")):
        tensor = tensor.reshape(-1)
    return f"model.layers.{layer}.{_FLA_PARTS[part]}.{name}", tensor


def to_official(tensors: dict[str, torch.Tensor], fmt: str, source: str) -> dict[str, torch.Tensor]:
    """A HF/fla state dict -> official keys (fla's transposed LoRA matrices back; other shapes are fitted by the
    official loader, which reshapes equal-sized tensors)."""
    if fmt not in HF_FORMATS:
        raise CheckpointError(f"{source}: unknown checkpoint format {fmt!r}; known: {', '.join(HF_FORMATS)}")
    inverse = {}
    layers = sorted({int(m.group(1)) for k in tensors if (m := re.search(r"(?:blocks|layers)\.(\d+)\.", k))})
    for key in _official_key_candidates(fmt, layers, tensors):
        name, _ = official_to_fla(key, torch.empty(0)) if fmt == "fla-rwkv7" else (official_to_hf_key(key, fmt), 0)
        inverse[name] = key
    unknown = sorted(k for k in tensors if k not in inverse)
    if unknown:
        raise CheckpointError(f"{source}: keys that are not {fmt} RWKV weights: {', '.join(unknown[:6])}")
    out = {}
    for name, tensor in tensors.items():
        key = inverse[name]
        lora = _LORA_KEY.match(key.rsplit(".", 1)[-1]) if fmt == "fla-rwkv7" else None
        out[key] = tensor.t() if lora and lora.group(2) != "0" else tensor
    return out


def _official_key_candidates(fmt: str, layers: list[int], tensors: dict) -> list[str]:
    """Every official key a file of `fmt` may hold (the union over generations; missing ones are checked later)."""
    names = {
        "att": [
            "time_mix_k",
            "time_mix_v",
            "time_mix_r",
            "time_mix_g",
            "time_decay",
            "time_first",
            "time_faaaa",
            "time_maa_x",
            "time_maa_w",
            "time_maa_k",
            "time_maa_v",
            "time_maa_r",
            "time_maa_g",
            "time_maa_w1",
            "time_maa_w2",
            "time_decay_w1",
            "time_decay_w2",
            "x_r",
            "x_w",
            "x_k",
            "x_v",
            "x_a",
            "x_g",
            "w0",
            "w1",
            "w2",
            "a0",
            "a1",
            "a2",
            "v0",
            "v1",
            "v2",
            "g1",
            "g2",
            "k_k",
            "k_a",
            "r_k",
            "receptance.weight",
            "key.weight",
            "value.weight",
            "gate.weight",
            "output.weight",
            "ln_x.weight",
            "ln_x.bias",
        ],
        "ffn": [
            "time_mix_k",
            "time_mix_r",
            "time_maa_k",
            "time_maa_r",
            "x_k",
            "key.weight",
            "receptance.weight",
            "value.weight",
        ],
        "ln0": ["weight", "bias"],
        "ln1": ["weight", "bias"],
        "ln2": ["weight", "bias"],
    }
    keys = list(_FLA_TOP)
    for layer in layers:
        keys += [f"blocks.{layer}.{part}.{name}" for part, group in names.items() for name in group]
    return keys


def read_hf(directory: str | Path) -> dict[str, torch.Tensor]:
    """A HF/fla checkpoint directory's weights (any of HF_FORMATS) under the official `.pth` key names and shapes,
    which `mmrwkv.checkpoint.model_from_official` builds a model from."""
    directory = Path(directory)
    fmt = detect_format(directory)
    if fmt is None:
        raise CheckpointError(f"{directory / CONFIG_FILE}: names no RWKV format ({', '.join(HF_FORMATS)})")
    tensors = read_weights(directory)
    meta = read_hf_config(directory)
    head = "lm_head.weight" if fmt == "fla-rwkv7" else "head.weight"
    if head not in tensors and meta.get("tie_word_embeddings"):
        embedding = "model.embeddings.weight" if fmt == "fla-rwkv7" else "rwkv.embeddings.weight"
        tensors[head] = tensors[embedding].clone()
    return to_official(tensors, fmt, str(directory))


def hf_config(model, fmt: str) -> dict:
    """config.json of a HF/fla export (the fields each framework's config class reads)."""
    c = model.config
    dtype = str(model.emb.weight.dtype).removeprefix("torch.")
    if fmt == "fla-rwkv7":
        return {
            "architectures": ["RWKV7ForCausalLM"],
            "model_type": "rwkv7",
            "attn_mode": "chunk",
            "hidden_size": c.n_embd,
            "hidden_ratio": c.dim_ffn / c.n_embd,
            "intermediate_size": c.dim_ffn,
            "num_hidden_layers": c.n_layer,
            "head_dim": c.head_size,
            "num_heads": c.n_embd // c.head_size,
            "decay_low_rank_dim": c.dim_w,
            "gate_low_rank_dim": c.dim_g,
            "a_low_rank_dim": c.dim_a,
            "v_low_rank_dim": c.dim_v,
            "value_dim": [c.n_embd] * c.n_layer,
            "hidden_act": "sqrelu",
            "norm_first": True,
            "norm_bias": True,
            "norm_eps": 1e-5,
            "fuse_norm": False,
            "vocab_size": c.vocab_size,
            "tie_word_embeddings": False,
            "use_cache": True,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": dtype,
        }
    arch = {
        "hf-rwkv4": ("RwkvForCausalLM", "rwkv"),
        "hf-rwkv5": ("Rwkv5ForCausalLM", "rwkv5"),
        "hf-rwkv6": ("Rwkv6ForCausalLM", "rwkv6"),
    }[fmt]
    out = {
        "architectures": [arch[0]],
        "model_type": arch[1],
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "attention_hidden_size": c.n_embd,
        "intermediate_size": c.dim_ffn,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "rescale_every": 6,
        "tie_word_embeddings": False,
        "use_cache": True,
        "context_length": 4096,
        "torch_dtype": dtype,
    }
    if fmt != "hf-rwkv4":
        out.update({"head_size": c.head_size, "head_size_divisor": 8, "num_attention_heads": c.n_embd // c.head_size})
    return out


def hf_state_dict(model, fmt: str) -> dict[str, torch.Tensor]:
    """The model's tensors (LoRA merged) under the names and layouts of `fmt`."""
    from mmrwkv.lora import merged_state_dict

    tensors = {k: v.detach().cpu() for k, v in merged_state_dict(model).items()}
    if fmt == "fla-rwkv7":
        return dict(official_to_fla(k, v) for k, v in tensors.items())
    return {official_to_hf_key(k, fmt): v for k, v in tensors.items()}


def save_hf(model, directory: str | Path, fmt: str | None = None) -> Path:
    """Write `model` as a HF/fla directory (config.json + model.safetensors), atomically; `fmt` defaults to the
    generation's (RWKV-7: fla). The directory must be new or empty."""
    from safetensors.torch import save_file

    generation = model.config.generation
    fmt = fmt or FORMAT_OF_GENERATION[generation]
    if FORMAT_OF_GENERATION.get(generation) != fmt:
        raise CheckpointError(f"{directory}: an RWKV-{model.config.version} model cannot be written as {fmt}")
    if fmt == "hf-rwkv5" and model.config.version != "5.2":
        raise CheckpointError(f"{directory}: the RWKV-5 HF format holds RWKV-5.2 only, not {model.config.version}")
    if model.tuned_state is not None:
        raise CheckpointError(f"{directory}: {fmt} has no place for a tuned start state; save ours or .pth instead")
    directory = Path(directory).resolve()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise CheckpointError(f"{directory}: exists and is not empty; a {fmt} export goes to a new directory")
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tensors = unshared({k: v.contiguous() for k, v in hf_state_dict(model, fmt).items()})
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config(model, fmt), indent=2) + "\n")
        replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
