"""RWKV checkpoints: the authors' official `.pth` and ours (a directory: config.json + model.safetensors).

Official files are flat state_dicts whose keys equal our module names, so loading is a near-identity mapping:
the generation and every size are read from tensor shapes (never from a formula), a few parameters are
reshaped (e.g. [H, 1] -> [H]), and layer 0's unused RWKV-7 v0/v1/v2 are kept aside for saving back.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import uuid
import zipfile
from pathlib import Path

import torch

from mmrwkv.checkpoint_files import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    check_replaceable,
    cut_zip,
    missing_checkpoint,
    replace_dir,
    resolve,
    safetensors_meta,
    torch_load,
    unpickling_reason,
    unshared,
)
from mmrwkv.errors import CheckpointError, ConfigError
from mmrwkv.limits import check_model_size
from mmrwkv.lora import merged_state_dict
from mmrwkv.rwkv.config import RWKVConfig
from mmrwkv.rwkv.model import RWKV
from mmrwkv.rwkv.state import State

# layer 0 computes v_first and never uses these; some official RWKV-7 checkpoints carry them
_DROPPED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
# state-tuned checkpoints (RWKV-5/6) carry each layer's tuned start state, stored [H, value, key]
_TIME_STATE = re.compile(r"^blocks\.(\d+)\.att\.time_state$")
TUNED_STATE_FILE = "tuned_state.safetensors"
V7_TIME_STATE_WHY = (
    ": the layout of an RWKV-7 time_state is not fixed. Trainers on the authors' kernels store [H, value, key] "
    "(the RWKV-7 state's own layout), trainers on flash-linear-attention store its initial_state [H, key, value]; "
    "both are [H, N, N], so a wrong guess would load silently wrong, and neither RWKV_SPEC nor the rwkv package "
    "(which ignores RWKV-7 time_state) settles it. Load the weights without the time_state keys, then set "
    "model.tuned_state to an RWKV-7 State whose wkv is [L, 1, H, value, key] (transpose an fla state); "
    "save_rwkv keeps it (tuned_state.safetensors)"
)


def load_rwkv(path: str | Path, *, dtype: torch.dtype | None = None, device=None) -> RWKV:
    """Load ours (a directory) or an official `.pth`; `dtype` defaults to the stored embedding's dtype."""
    path = resolve(Path(path))
    if path.is_dir():
        from mmrwkv.checkpoint_hf import detect_format, read_hf

        if detect_format(path):
            model = model_from_official(read_hf(path), dtype=dtype, source=str(path))
        else:
            model = _load_ours(path, dtype)
    elif path.is_file():
        model = load_official(path, dtype=dtype)
    else:
        raise missing_checkpoint(path)
    return model.to(device) if device is not None else model


def load_official(path: str | Path, *, dtype: torch.dtype | None = None) -> RWKV:
    """Build an RWKV from an official `.pth` (ln0 kept explicit, not folded into the embedding)."""
    path = Path(path)
    return model_from_official(read_official(path), dtype=dtype, source=str(path))


def model_from_official(
    state_dict: dict[str, torch.Tensor], *, dtype: torch.dtype | None = None, source: str = "checkpoint"
) -> RWKV:
    """Build an RWKV from a state dict with the official keys (read from a `.pth`, or mapped from another format
    by `mmrwkv.checkpoint_hf`): generation and sizes from the shapes, equal-sized tensors reshaped."""
    state_dict = _bonus_as_faaaa(dict(state_dict))
    time_state = {k: state_dict.pop(k) for k in [k for k in state_dict if _TIME_STATE.match(k)]}
    config = detect_config(state_dict, source=source)
    model = _build(config, state_dict, dtype, source=source)
    if time_state:
        model.tuned_state = tuned_state_from_official(time_state, config, source=source)
    return model


def _bonus_as_faaaa(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older RWKV-5.2/6 files store the per-head bonus as `time_first` = log u [H, N] instead of `time_faaaa` = u
    (the `rwkv` package reads both); rename those to `time_faaaa`. RWKV-5.0/5.1's `time_first` is [H] and stays."""
    out = {}
    for key, tensor in sd.items():
        prefix = key.removesuffix("time_first")
        per_channel = tensor.dim() == 2 and tensor.shape[1] > 1
        if key.endswith(".att.time_first") and per_channel and prefix + "ln_x.weight" in sd:
            if prefix + "time_faaaa" not in sd:
                out[prefix + "time_faaaa"] = torch.exp(tensor.float()).to(tensor.dtype)
                continue
        out[key] = tensor
    return out


def tuned_state_from_official(tensors: dict[str, torch.Tensor], config: RWKVConfig, *, source: str) -> State:
    """The batch-1 start State of a state-tuned checkpoint's `blocks.N.att.time_state` tensors ([H, value, key]
    per layer, as the `rwkv` package reads them; our RWKV-5/6 state is [key, value])."""
    if config.generation not in (5, 6):
        raise CheckpointError(
            f"{source}: time_state (state tuning) is read for RWKV-5/6, not RWKV-{config.version}"
            + (
                V7_TIME_STATE_WHY
                if config.generation == 7
                else ": RWKV-4's state is per channel (aa, bb, pp) and has no state-tuning format"
            )
        )
    want = (config.n_head, config.head_size, config.head_size)
    layers = []
    for i in range(config.n_layer):
        tensor = tensors.get(f"blocks.{i}.att.time_state")
        if tensor is None or tuple(tensor.shape) != want:
            got = "missing" if tensor is None else f"shape {list(tensor.shape)}"
            raise CheckpointError(f"{source}: blocks.{i}.att.time_state is {got}; every layer needs {list(want)}")
        layers.append(tensor.float().transpose(-1, -2))
    state = State.zeros(config, 1)
    return type(state)(state.att_x_prev, torch.stack(layers)[:, None].contiguous(), state.ffn_x_prev)


def load_tuned_state(model: RWKV, path: str | Path) -> RWKV:
    """Start `model` from the tuned state of a state-tuning file (only `blocks.N.att.time_state` tensors, the
    output of state tuning) or of a checkpoint that carries one; in place."""
    path = Path(path)
    sd = torch_load(path) if path.is_file() else None
    tensors = {k: v for k, v in (sd or {}).items() if _TIME_STATE.match(str(k)) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no blocks.N.att.time_state tensors (not a state-tuning file)")
    model.tuned_state = tuned_state_from_official(tensors, model.config, source=str(path))
    return model


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state_dict of a `.pth`, memory-mapped when the file format allows; never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise missing_checkpoint(path, "checkpoint file")
    try:
        data = torch_load(path)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: {unpickling_reason(err)}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        # first sentence only (torch's zip reader goes on about miniz and how files get corrupted)
        detail = str(err).splitlines()[0].split(". ")[0] if str(err) else "unexpected end of file"
        if cut_zip(path):
            detail = f"a zip archive without its end (central directory): cut short at {path.stat().st_size:,} bytes"
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint (truncated or corrupt?): {detail}") from err
    except Exception as err:  # e.g. a text file: torch's unpickler fails with KeyError / IndexError inside
        detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint (not a .pth file?): {detail}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a flat state_dict of tensors (got {type(data).__name__})")
    others = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if others:
        hint = (
            " (a file the rwkv package converted for one strategy: use the original .pth)"
            if "_strategy" in data
            else ""
        )
        got = ", ".join(f"{k!r} is a {type(data[k]).__name__}" for k in others[:4])
        raise CheckpointError(f"{path}: not a flat state_dict of tensors: {got}{hint}")
    if "emb.weight" not in data:
        if data and all(_TIME_STATE.match(k) for k in data):
            raise CheckpointError(
                f"{path}: a state-tuning file (only blocks.N.att.time_state): load its base model, "
                "then mmrwkv.checkpoint.load_tuned_state(model, path)"
            )
        raise CheckpointError(f"{path}: not an RWKV checkpoint: no 'emb.weight' among {len(data)} keys")
    return data


def detect_config(sd: dict[str, torch.Tensor], *, source: str = "checkpoint") -> RWKVConfig:
    """Generation and every size from the tensor shapes of an official state_dict."""
    V, C = _shape(sd, "emb.weight", source, dims=2)
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layers:
        raise CheckpointError(f"{source}: no 'blocks.N.*' keys: not an RWKV checkpoint")
    if layers[-1] != len(layers) - 1:
        gap = next(i for i, n in enumerate(layers) if n != i)
        raise CheckpointError(
            f"{source}: layer indices are not contiguous: blocks.{layers[gap]}.* follows "
            f"{f'blocks.{layers[gap - 1]}.*' if gap else 'no blocks.0.*'} ({len(layers)} layers numbered "
            f"0..{layers[-1]})"
        )
    common = dict(n_layer=len(layers), n_embd=C, vocab_size=V)
    att_c = _shape(sd, "blocks.0.att.key.weight", source, dims=2)[0]
    if att_c != C:
        raise CheckpointError(f"{source}: attention width {att_c} differs from n_embd {C}; not supported")
    common["dim_ffn"] = _shape(sd, "blocks.0.ffn.key.weight", source, dims=2)[0]
    try:
        return RWKVConfig(**common, **_generation_fields(sd, source))
    except ConfigError as err:
        raise CheckpointError(f"{source}: inconsistent sizes: {err}") from err


def _generation_fields(sd: dict, source: str) -> dict:
    att = "blocks.0.att."
    C = sd["emb.weight"].shape[1]
    if att + "r_k" in sd:
        H, N = _shape(sd, att + "r_k", source, dims=2)
        v1 = "blocks.1.att.v1" if "blocks.1.att.v1" in sd else att + "v1"
        fields = dict(version="7", head_size=N, dim_w=_shape(sd, att + "w1", source, dims=2)[1])
        fields["dim_a"] = _shape(sd, att + "a1", source, dims=2)[1]
        fields["dim_g"] = _shape(sd, att + "g1", source, dims=2)[1]
        if v1 in sd:
            fields["dim_v"] = _shape(sd, v1, source, dims=2)[1]
        return fields
    if att + "time_maa_x" in sd:
        H, N = _shape(sd, att + "time_faaaa", source, dims=2)
        dim_maa = _shape(sd, att + "time_maa_w1", source, dims=2)[1] // 5
        dim_decay = _shape(sd, att + "time_decay_w1", source, dims=2)[1]
        return dict(version="6", head_size=N, dim_maa=dim_maa, dim_decay=dim_decay)
    if att + "ln_x.weight" in sd:
        decay = sd.get(att + "time_decay")
        if decay is None:
            raise CheckpointError(f"{source}: missing key {att}time_decay")
        if decay.dim() == 0 or decay.shape[0] == 0:
            raise CheckpointError(f"{source}: {att}time_decay has shape {list(decay.shape)}, expected [H] or [H, N]")
        H = decay.shape[0]
        if decay.dim() > 1 and decay.shape[1] > 1:
            version = "5.2"
        else:
            version = "5.1" if att + "gate.weight" in sd else "5.0"
        return dict(version=version, head_size=C // H)
    return dict(version="4")


def _shape(sd: dict, key: str, source: str, *, dims: int | None = None) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key {key}")
    shape = tuple(sd[key].shape)
    if dims is not None and len(shape) != dims:
        raise CheckpointError(f"{source}: {key} has shape {list(shape)}, expected {dims} dimensions")
    return shape


def _build(config: RWKVConfig, sd: dict[str, torch.Tensor], dtype, *, source: str) -> RWKV:
    """A model whose parameters are the given tensors (mapped/reshaped, cast to `dtype`), without a copy."""
    dtype = dtype or sd["emb.weight"].dtype
    check_model_size(config, source, bytes_per_param=dtype.itemsize)
    with torch.device("meta"):
        model = RWKV(config)
    expected = model.state_dict()
    sd, unused = _checked(config, {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}, sd, expected, source)
    mapped = {k: _fit(sd[k], tuple(want.shape), k, source).to(dtype) for k, want in expected.items()}
    model.load_state_dict(unshared(mapped), assign=True)
    # ours records it in the config (an fp32 save of a bf16 file keeps it); else it follows the stored dtypes
    model.ln0_dtype = model.ln0_dtype or _ln0_fold_dtype(config, sd)
    # kept only so that a conversion writes them back: official files with and without them round-trip bit-exact
    model.unused_official = {k: v.to(dtype) for k, v in unused.items()}
    return model


def _checked(config: RWKVConfig, meta: dict[str, tuple], sd: dict, expected: dict, source: str) -> tuple[dict, dict]:
    """Check a checkpoint's keys, shapes and dtypes (`meta`: key -> (shape, dtype)) against a model's `expected`
    state_dict -> (`sd` without the unused RWKV-7 layer-0 v0/v1/v2, those). Raises CheckpointError naming the file."""
    unused = [k for k in _DROPPED if k in meta and k not in expected] if config.generation == 7 else []
    missing = [k for k in expected if k not in meta]
    extra = [k for k in meta if k not in expected and k not in unused]
    if missing:
        raise CheckpointError(f"{source}: missing keys for an RWKV-{config.version} model: {_few(missing)}")
    if extra:
        raise CheckpointError(f"{source}: unexpected keys for an RWKV-{config.version} model: {_few(extra)}")
    for key, want in expected.items():
        shape, dtype = meta[key]
        if not dtype.is_floating_point:
            raise CheckpointError(f"{source}: {key} has dtype {str(dtype).removeprefix('torch.')}, expected floats")
        if shape != tuple(want.shape) and torch.Size(shape).numel() != want.numel():
            raise CheckpointError(f"{source}: {key} has shape {list(shape)}, the model needs {list(want.shape)}")
    return {k: v for k, v in sd.items() if k not in unused}, {k: sd[k] for k in unused}


def _ln0_fold_dtype(config: RWKVConfig, sd: dict[str, torch.Tensor]) -> torch.dtype | None:
    """The dtype the authors' package computes ln0 in for these stored weights: for RWKV-4/5/6 it folds ln0 into
    the embedding before any cast (`F.layer_norm` on the stored tensors, which works for a bf16/fp16 embedding with
    ln0 in the same dtype or in fp32; in fp32 when that fails), so a bf16/fp16 file's `cpu fp32` logits carry ln0's
    output rounded to bf16/fp16. RWKV-7 casts first."""
    emb = sd["emb.weight"].dtype
    ln0 = {sd["blocks.0.ln0.weight"].dtype, sd["blocks.0.ln0.bias"].dtype}
    if config.generation > 6 or emb not in (torch.bfloat16, torch.float16) or ln0 not in ({emb}, {torch.float32}):
        return None
    return emb


def _fit(tensor: torch.Tensor, shape: tuple[int, ...], key: str, source: str) -> torch.Tensor:
    if tuple(tensor.shape) == shape:
        return tensor
    if tensor.numel() == torch.Size(shape).numel():
        return tensor.reshape(shape)
    raise CheckpointError(f"{source}: {key} has shape {list(tensor.shape)}, the model needs {list(shape)}")


def _few(keys: list[str], n: int = 6) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def save_rwkv(model: RWKV, directory: str | Path) -> Path:
    """Write ours: `directory/config.json` + `model.safetensors`, atomically (temp directory, then rename).
    LoRA adapters are merged into the saved weights (a plain checkpoint); the model is not changed."""
    from safetensors.torch import save_file

    directory = Path(directory).resolve()
    check_replaceable(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in merged_state_dict(model).items()}
        tensors = unshared({**tensors, **_unused_official(model)})
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        if model.tuned_state is not None:
            model.tuned_state.save(tmp / TUNED_STATE_FILE)
        meta = {
            "format": FORMAT,
            "kind": "rwkv",
            "config": model.config.to_dict(),
            "dtype": str(model.emb.weight.dtype).removeprefix("torch."),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_config(directory: str | Path) -> RWKVConfig:
    """The RWKVConfig stored in one of our checkpoint directories."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not an mmrwkv checkpoint directory (no {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'format' is {_get(meta, 'format')!r}, expected {FORMAT!r}")
    if meta.get("kind") != "rwkv":
        raise CheckpointError(f"{path}: 'kind' is {meta.get('kind')!r}, expected 'rwkv' (multimodal: MultimodalRWKV)")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: 'config' must be an object with the RWKVConfig fields")
    try:
        return RWKVConfig.from_dict(meta["config"], source=str(path))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: bad 'config': {err}") from err


def _get(meta, key):
    return meta.get(key) if isinstance(meta, dict) else None


def _load_ours(directory: Path, dtype) -> RWKV:
    from safetensors.torch import load_file

    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: missing {WEIGHTS_FILE}")
    try:
        sd = load_file(str(weights))
    except Exception as err:
        raise CheckpointError(f"{weights}: cannot read safetensors (truncated or corrupt?): {err}") from err
    if "emb.weight" not in sd:
        raise CheckpointError(f"{weights}: missing key emb.weight")
    model = _build(config, sd, dtype, source=str(weights))
    if (directory / TUNED_STATE_FILE).is_file():
        model.tuned_state = State.load(directory / TUNED_STATE_FILE, config=config)
    return model


def load_backbone_weights(model: RWKV, path: str | Path) -> RWKV:
    """Copy the weights of an RWKV checkpoint (ours or official) into `model`, in place; the shapes must match."""
    source = load_rwkv(path, dtype=model.emb.weight.dtype)
    for name, want in model.config.to_dict().items():
        got = getattr(source.config, name)
        if got != want and name != "ln0_dtype":
            raise CheckpointError(f"{path}: checkpoint has {name}={got!r}, the model was built with {name}={want!r}")
    with torch.no_grad():
        model.load_state_dict(source.state_dict())
    # how the weights' source computes ln0 goes with them
    model.ln0_dtype = source.ln0_dtype
    return model


def _unused_official(model: RWKV) -> dict[str, torch.Tensor]:
    """Layer 0's RWKV-7 v0/v1/v2 read from the file the model came from (unused by the model), in its dtype."""
    dtype = model.emb.weight.dtype
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in getattr(model, "unused_official", {}).items()}


def save_official(model: RWKV, path: str | Path) -> Path:
    """Write an official-format `.pth` (flat state_dict, official keys and shapes, LoRA merged), atomically."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in merged_state_dict(model).items()}
    tensors.update({k: v.clone() for k, v in _unused_official(model).items()})
    if model.tuned_state is not None and model.config.generation == 7:
        raise CheckpointError(f"{path}: an RWKV-7 tuned state is not written as time_state" + V7_TIME_STATE_WHY)
    if model.tuned_state is not None:
        # back to the official [H, value, key] layout, in the weights' dtype
        wkv = model.tuned_state.wkv[:, 0].transpose(-1, -2).to(model.emb.weight.dtype).cpu()
        tensors.update({f"blocks.{i}.att.time_state": wkv[i].contiguous() for i in range(len(wkv))})
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; an official checkpoint is one .pth file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def convert(src: str | Path, dst: str | Path, *, dtype: torch.dtype | None = None, to: str | None = None) -> Path:
    """Convert any checkpoint `load_rwkv` reads (ours, official, HF/fla: detected) into `to`: "ours", "official",
    "hf" (the generation's HF format, fla for RWKV-7) or one of `checkpoint_hf.HF_FORMATS`. Default: a `dst`
    ending in `.pth` gets the official format, anything else ours."""
    model = load_rwkv(src, dtype=dtype)
    to = to or ("official" if str(dst).endswith(".pth") else "ours")
    if to == "official":
        return save_official(model, dst)
    if to == "ours":
        return save_rwkv(model, dst)
    from mmrwkv.checkpoint_hf import save_hf

    return save_hf(model, dst, None if to == "hf" else to)


def describe(path: str | Path) -> dict:
    """Format, config, parameter count and whether a tuned start state comes with a checkpoint, without loading
    its weights into a model; the stored keys, shapes and dtypes are checked as loading checks them."""
    path = resolve(Path(path))
    from mmrwkv.checkpoint_hf import detect_format

    if path.is_dir() and detect_format(path):
        model = load_rwkv(path)
        return {
            "path": str(path),
            "format": detect_format(path),
            "config": model.config,
            "parameters": model.num_parameters(),
            "tuned_state": False,
        }
    if path.is_dir():
        fmt, config = FORMAT, read_config(path)
        tuned = (path / TUNED_STATE_FILE).is_file()
        source, meta = path / WEIGHTS_FILE, safetensors_meta(path / WEIGHTS_FILE)
    else:
        sd = read_official(path)
        fmt, config = "official", detect_config(_bonus_as_faaaa(sd), source=str(path))
        tuned = any(_TIME_STATE.match(k) for k in sd)
        source = path
        meta = {k: (tuple(v.shape), v.dtype) for k, v in _bonus_as_faaaa(sd).items() if not _TIME_STATE.match(k)}
    check_model_size(config, str(source), bytes_per_param=1)
    with torch.device("meta"):
        model = RWKV(config)
    _checked(config, meta, meta, model.state_dict(), str(source))
    n_params = model.num_parameters()
    return {"path": str(path), "format": fmt, "config": config, "parameters": n_params, "tuned_state": tuned}
