"""Early fusion of media into an RWKV token stream.

The chat template (`mmrwkv.data.template`) writes N reserved placeholder ids per media item, N being what the
encoder + projector yield for THAT item. `MultimodalRWKV.embed` looks up the text embeddings, encodes and
projects the media (one batch per modality and item shape), checks that the slots and the features agree in
number, and writes the features into their slots with `masked_scatter` (torchtune's EarlyFusion scheme).
ln0 stays an explicit op of the backbone, applied to the fused stream.

Notation: B batch, T time, C model width, M media items, N tokens per item, D encoder width.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmrwkv import limits
from mmrwkv.checkpoint_files import check_replaceable, missing_checkpoint, replace_dir
from mmrwkv.errors import CheckpointError, ConfigError, MediaError
from mmrwkv.names import MODALITIES

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Media:
    """Preprocessed media per modality, each list in order of appearance in the ids (batch-major)."""

    items: dict[str, list[Tensor]] = field(default_factory=dict)

    def add(self, modality: str, tensor: Tensor) -> None:
        """Append one preprocessed item of `modality`."""
        self.items.setdefault(modality, []).append(tensor)

    def get(self, modality: str) -> list[Tensor]:
        """The items of `modality` (empty list when there are none)."""
        return self.items.get(modality, [])

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())

    @staticmethod
    def cat(parts: list[Media | None]) -> Media:
        """Concatenate per-sample (or per-turn) media, keeping the order of `parts`."""
        out = Media()
        for part in parts:
            for modality, tensors in (part.items if part else {}).items():
                for t in tensors:
                    out.add(modality, t)
        return out


class MultimodalRWKV(nn.Module):
    """An RWKV backbone with media encoders whose projected features fill placeholder slots.

    `encoders` and `projectors` are keyed by modality ("image", "audio"); placeholder ids come from
    `tokenizer.special`. `config` is the dict `from_config` was built from; `save` needs it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoders: dict[str, nn.Module],
        projectors: dict[str, nn.Module],
        tokenizer: Any,
        *,
        config: dict | None = None,
    ):
        super().__init__()
        for modality, encoder in encoders.items():
            if modality not in MODALITIES or getattr(encoder, "modality", modality) != modality:
                raise ConfigError(
                    f"encoders[{modality!r}]: modality must be one of {MODALITIES} and match "
                    f"the encoder's own ({getattr(encoder, 'modality', None)!r})"
                )
            if modality not in projectors:
                raise ConfigError(f"projectors: missing the projector for modality {modality!r}")
        self.backbone = backbone
        self.encoders = nn.ModuleDict(encoders)
        self.projectors = nn.ModuleDict({m: projectors[m] for m in encoders})
        self.tokenizer = tokenizer
        self.config = config
        self.placeholder_ids = {m: int(getattr(tokenizer.special, m)) for m in self.encoders}

    def preprocess(self, modality: str, item: Any) -> Tensor:
        """Run the `modality` encoder's preprocessing on one item (path, PIL image, bytes, waveform...)."""
        if modality not in self.encoders:
            raise MediaError(f"this model has no {modality} encoder (it has: {sorted(self.encoders)})")
        return self.encoders[modality].preprocess(item)

    def tokens_per_item(self, modality: str, preprocessed: Tensor) -> int:
        """Number of placeholder slots one preprocessed item fills (encoder tokens, then the projector's)."""
        n_in = self.encoders[modality].num_tokens(preprocessed)
        return int(self.projectors[modality].num_tokens(n_in))

    def encode_media(self, modality: str, items: list[Tensor]) -> Tensor:
        """Encode and project items of one modality into (sum of N_i, C) features in item order.

        Items of equal shape share one encoder batch; the encoder runs without autograd when frozen.
        """
        encoder, projector = self.encoders[modality], self.projectors[modality]
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(items):
            groups.setdefault(tuple(t.shape), []).append(i)
        trainable = torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())
        out: list[Tensor | None] = [None] * len(items)
        for idx in groups.values():
            batch = _to_encoder(encoder.collate([items[i] for i in idx]), encoder, self.backbone.head.weight.device)
            with torch.set_grad_enabled(trainable):
                feats = encoder(batch)  # (M, N, D)
            proj = projector(feats)  # (M, N', C)
            for j, i in enumerate(idx):
                out[i] = proj[j, : self.tokens_per_item(modality, items[i])]
        return torch.cat(out, dim=0)  # (sum N_i, C)

    def embed(self, ids: Tensor, media: Media | None = None) -> Tensor:
        """Embed ids (B, T) and write projected media features into their placeholder slots -> (B, T, C)."""
        x = self.backbone.embed(ids)  # (B, T, C)
        media = media or Media()
        self._check_modalities(ids, media)
        for modality, pid in self.placeholder_ids.items():
            mask = ids == pid  # (B, T)
            items = media.get(modality)
            n_slots, n_feats = int(mask.sum()), sum(self.tokens_per_item(modality, t) for t in items)
            if n_slots != n_feats:
                raise MediaError(
                    f"{modality}: the ids hold {n_slots} placeholder slots but the {len(items)} "
                    f"{modality} item(s) give {n_feats} features"
                )
            if n_slots:
                feats = self.encode_media(modality, items)  # (n_slots, C)
                x = x.masked_scatter(mask.unsqueeze(-1), feats.to(x.dtype))
        return x

    def _check_modalities(self, ids: Tensor, media: Media) -> None:
        for modality in set(MODALITIES) - set(self.encoders):
            pid = getattr(self.tokenizer.special, modality, None)
            n_slots = 0 if pid is None else int((ids == pid).sum())
            if n_slots or media.get(modality):
                raise MediaError(
                    f"{modality}: {n_slots} placeholder slots and {len(media.get(modality))} items "
                    f"given, but this model has no {modality} encoder (it has {sorted(self.encoders)})"
                )

    def forward(self, ids: Tensor, media: Media | None = None, state=None, *, last_only: bool = False):
        """Fused forward pass -> (logits, state); ln0 is applied by the backbone to the fused stream."""
        return self.backbone(self.embed(ids, media), state, last_only=last_only)

    def forward_hidden(self, ids: Tensor, media: Media | None = None, state=None):
        """Fused forward pass up to ln_out -> (h (B, T, C), state)."""
        return self.backbone.forward_hidden(self.embed(ids, media), state)

    @classmethod
    def from_config(cls, config: dict) -> MultimodalRWKV:
        """Build a fresh model from a config dict (the `config.json` of a saved model, or a recipe's).

        Keys: `backbone` (RWKVConfig fields, or `{"size": NAME, **overrides}`), `tokenizer` (spec for
        `load_tokenizer`, default "world"), `encoders` ({modality: {"name", "kwargs"}}), `projectors`
        ({modality: {"kind", "kwargs"}}), `placement` (chat template placement, default "inline").
        """
        from mmrwkv.encoders import build
        from mmrwkv.encoders.projector import build_projector
        from mmrwkv.tokenizer import load_tokenizer

        _check_keys(config)
        backbone = _build_backbone(config["backbone"])
        encoders, projectors = {}, {}
        for modality, spec in config.get("encoders", {}).items():
            with _building(f"encoders.{modality}"):
                encoders[modality] = build(spec["name"], **spec.get("kwargs", {}))
            pspec = config.get("projectors", {}).get(modality, {"kind": "linear"})
            with _building(f"projectors.{modality}"):
                projectors[modality] = build_projector(
                    pspec["kind"], encoders[modality].out_dim, backbone.config.n_embd, **pspec.get("kwargs", {})
                )
        resolved = {**config, "backbone": asdict(backbone.config)}
        resolved.setdefault("tokenizer", "world")
        resolved.setdefault("placement", "inline")
        return cls(backbone, encoders, projectors, load_tokenizer(resolved["tokenizer"]), config=resolved)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json (kind "multimodal") + model.safetensors to `directory`, atomically.

        LoRA adapters are merged into the saved weights (the model in memory keeps them unmerged): the file is a
        plain checkpoint that `load` and every tool reads, with the same outputs. config.json records the merge
        under "lora" ({merged, rank, alpha, layers}); a later stage that trains LoRA again adds fresh adapters.
        """
        from safetensors.torch import save_file

        from mmrwkv.lora import lora_summary, merged_state_dict

        if self.config is None:
            raise ConfigError("this model was not built by MultimodalRWKV.from_config: no config to save")
        target = Path(directory).resolve()
        # only an empty directory or one of our checkpoints is replaced (one error line naming it otherwise)
        check_replaceable(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            meta = {"format": "mmrwkv", "kind": "multimodal", **self.config}
            # the backbone as it is now (e.g. `ln0_dtype` set after the model was built)
            meta["backbone"] = asdict(self.backbone.config)
            meta["tokenizer"] = _bundle_tokenizer(meta.get("tokenizer", "world"), tmp)
            lora = lora_summary(self)
            if lora is not None:
                meta["lora"] = {"merged": True, **lora}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            save_file(_unshared(merged_state_dict(self)), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike, *, map_location: str = "cpu") -> MultimodalRWKV:
        """Load a model written by `save`; a bad directory raises CheckpointError naming the file."""
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        directory = Path(directory)
        if not directory.exists():
            raise missing_checkpoint(directory, "checkpoint directory")
        config = _read_config(directory / CONFIG_FILE)
        spec = config.get("tokenizer")
        # a tokenizer file saved beside the weights is named relative to them
        if isinstance(spec, str) and spec != "world" and (directory / spec).exists():
            config["tokenizer"] = str((directory / spec).resolve())
        # "lora" only records adapters merged into the weights at save time: the model is a plain one
        from mmrwkv.encoders.weights import weights_from_checkpoint

        # model.safetensors holds the encoders' weights: their original files (weights=PATH) are not read again
        try:
            with weights_from_checkpoint():
                model = cls.from_config({k: v for k, v in config.items() if k not in ("format", "kind", "lora")})
        except ConfigError as err:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from None
        weights = directory / WEIGHTS_FILE
        try:
            # load_model restores tied weights that save_model stored once
            missing, unexpected = load_model(model, str(weights), strict=False)
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            raise CheckpointError(f"{weights}: cannot read the weights ({err})") from err
        adapters = sorted(k for k in unexpected if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B"))
        if adapters:
            raise CheckpointError(
                f"{weights}: holds unmerged LoRA adapter tensors ({adapters[:3]}...): an older "
                "mmrwkv wrote it; retrain it (saves now merge adapters into the weights)"
            )
        if missing or unexpected:
            raise CheckpointError(
                f"{weights}: does not fit the config (missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]})"
            )
        return model.to(map_location)


def _to_encoder(batch: Tensor, encoder: nn.Module, device: torch.device) -> Tensor:
    """Move a media batch to the model's device, and a float batch to the encoder's float dtype."""
    if not batch.is_floating_point():
        return batch.to(device)
    dtype = next((p.dtype for p in encoder.parameters() if p.is_floating_point()), batch.dtype)
    return batch.to(device, dtype)


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """One name per tensor that several names share (tied weights; `load_model` restores the others), contiguous
    and detached, as safetensors requires."""
    out, seen = {}, set()
    for name in sorted(state):
        t = state[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def is_multimodal_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory saved by `MultimodalRWKV.save` (config.json of kind "multimodal")."""
    config = Path(path) / CONFIG_FILE
    try:
        return json.loads(config.read_text()).get("kind") == "multimodal"
    except (OSError, ValueError, AttributeError):
        return False


CONFIG_KEYS = {"backbone", "tokenizer", "encoders", "projectors", "placement"}


def _check_keys(config: dict) -> None:
    unknown = set(config) - CONFIG_KEYS
    if unknown or "backbone" not in config:
        raise ConfigError(
            f"multimodal config: unknown keys {sorted(unknown)} or no 'backbone' (valid keys: {sorted(CONFIG_KEYS)})"
        )
    for part in ("encoders", "projectors"):
        for modality in config.get(part, {}):
            if modality not in MODALITIES:
                raise ConfigError(f"multimodal config: {part}.{modality}: unknown modality (valid: {MODALITIES})")


@contextlib.contextmanager
def _building(part: str):
    """Name the config part in its ConfigError, and turn a failed allocation (sizes no limit covers, such as an
    encoder's width) into one: torch raises RuntimeError "can't allocate memory", Python MemoryError."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{part}: {err}") from None
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(err))
        size = f" ({int(asked.group(1)) / 2**30:.1f} GiB at once)" if asked else ""
        raise ConfigError(f"{part}: its sizes need more memory than this machine gives{size}") from None


def _build_backbone(spec: dict) -> nn.Module:
    from mmrwkv.rwkv import RWKV, RWKVConfig, config_for

    spec = dict(spec)
    size = spec.pop("size", None)
    try:
        cfg = config_for(size, **spec) if size else RWKVConfig(**spec)
    except TypeError as err:
        raise ConfigError(f"multimodal config: backbone: {err}") from err
    # sizes are checked before the weights are allocated
    limits.check_model_size(cfg, "multimodal config: backbone")
    return RWKV(cfg)


def _bundle_tokenizer(spec: str, target: Path) -> str:
    """Copy a tokenizer file into the checkpoint directory being written and return its name there, so that the
    checkpoint stays whole when copied or moved ("world" and anything that is not a file stay as they are)."""
    source = Path(spec)
    if spec == "world" or not (source.is_file() or (source / TOKENIZER_FILE).is_file()):
        return spec
    source = source if source.is_file() else source / TOKENIZER_FILE
    name = TOKENIZER_FILE if source.suffix == ".json" else source.name
    shutil.copyfile(source, target / name)
    return name


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the config ({err})") from err
    if config.get("format") != "mmrwkv" or config.get("kind") != "multimodal":
        raise CheckpointError(
            f"{path}: not a multimodal mmrwkv checkpoint (format {config.get('format')!r}, kind {config.get('kind')!r})"
        )
    return config
