"""Recipe -> model, tokenizer, datasets and collate: the glue between the config and the library parts."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from mmrwkv.config import DataConfig, RecipeConfig
from mmrwkv.errors import ConfigError
from mmrwkv.training.lengths import MediaCache, fit_length

__all__ = ["MediaCache", "build_datasets", "build_model", "load_split", "make_collate", "to_turns"]

TOKENIZER_FILE = "tokenizer.json"


def load_split(data: DataConfig, split: str):
    """The `mmrwkv.data.Dataset` of one split (generated kinds are prepared on first use)."""
    from mmrwkv.data import build_dataset

    return build_dataset(data, split)


def select_answer_types(dataset, answer_types: Sequence[str]):
    """The samples of `dataset` whose answer type is one of `answer_types` (all of them when it is empty)."""
    if not answer_types:
        return dataset
    kept = [s for s in dataset if s.answer_type in answer_types]
    if not kept:
        present = sorted({str(s.answer_type) for s in dataset})
        raise ConfigError(f"data.answer_types {list(answer_types)} keeps no training sample; the split has answer "
                          f"types {present}")
    return dataclasses.replace(dataset, samples=kept)


def _texts(dataset) -> list[str]:
    texts = []
    for sample in dataset:
        texts += [text for _, text in sample.conversation()] + list(sample.captions)
    return texts


def tokenizer_spec(cfg: RecipeConfig, train_set) -> str:
    """The tokenizer spec the model is built with; "bpe" trains one on the training texts (once per output dir)."""
    if cfg.model.tokenizer != "bpe":
        return cfg.model.tokenizer
    from mmrwkv.data.template import ROLES
    from mmrwkv.tokenizer import train_bpe

    path = Path(cfg.train.output_dir).resolve() / TOKENIZER_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        # the chat template's role words are text too: train on them so they are single tokens
        template = [f"{role}: " for role in ROLES.values()] * 100
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        train_bpe(template + _texts(train_set), cfg.model.bpe_vocab_size, tmp)
        # several processes (multi-device training) may train it at once: each renames a whole file
        os.replace(tmp, path)
    return str(path)


def model_config(cfg: RecipeConfig, tokenizer: str, vocab_size: int, backbone: dict | None = None) -> dict:
    """The `MultimodalRWKV.from_config` dict of a fresh model (`backbone`: RWKVConfig fields of loaded weights)."""
    if backbone is None:
        backbone = {"size": cfg.model.size, **cfg.model.overrides, "vocab_size": vocab_size}
    return {
        "backbone": backbone,
        "tokenizer": tokenizer,
        "encoders": {m: {"name": e.name, "kwargs": dict(e.kwargs)} for m, e in cfg.encoders.items()},
        "projectors": {m: _projector(p) for m, p in cfg.projector.items()},
        "placement": cfg.template.placement,
    }


def _projector(spec) -> dict:
    kwargs = {} if spec.reduction is None else {"reduction": spec.reduction}
    return {"kind": spec.kind, "kwargs": kwargs}


def build_model(cfg: RecipeConfig, train_set=None):
    """A fresh model (or `train.init_from` / `model.checkpoint` weights) with the recipe's trainable parts."""
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import load_tokenizer

    if cfg.train.init_from is not None:
        model = MultimodalRWKV.load(cfg.train.init_from)
        check_vocabulary(model, f"train.init_from {cfg.train.init_from}")
    elif cfg.model.checkpoint is not None:
        model = _from_checkpoint(cfg)
        check_vocabulary(model, f"model.checkpoint {cfg.model.checkpoint}")
    else:
        spec = tokenizer_spec(cfg, train_set if train_set is not None else load_split(cfg.data, cfg.data.train_split))
        model = MultimodalRWKV.from_config(model_config(cfg, spec, load_tokenizer(spec).vocab_size))
    apply_trainable(model, cfg)
    return model


def _from_checkpoint(cfg: RecipeConfig):
    """A model whose backbone starts from trained weights (official `.pth` or ours); fresh encoders/projectors."""
    from mmrwkv.checkpoint import load_rwkv
    from mmrwkv.multimodal import MultimodalRWKV

    if cfg.model.tokenizer == "bpe":
        raise ConfigError("model.tokenizer: 'bpe' trains a new vocabulary, which a trained checkpoint cannot use; "
                          "use 'world' or the checkpoint's tokenizer.json")
    loaded = load_rwkv(cfg.model.checkpoint, dtype=torch.float32)
    fields = dataclasses.asdict(loaded.config)
    model = MultimodalRWKV.from_config(model_config(cfg, cfg.model.tokenizer, fields["vocab_size"], backbone=fields))
    model.backbone.load_state_dict(loaded.state_dict())
    return model


def apply_trainable(model, cfg: RecipeConfig) -> None:
    """Freeze / train / LoRA-wrap the encoders, projectors and backbone as the recipe's `trainable` says."""
    from mmrwkv.lora import set_trainable

    t = cfg.trainable
    for part, mode in (("encoders", t.encoder), ("projectors", t.projector), ("backbone", t.backbone)):
        lora = {"rank": t.lora_rank, "alpha": t.lora_alpha} if mode == "lora" else {}
        set_trainable(getattr(model, part), mode, **lora)


def media_key(sample) -> tuple[str, ...]:
    """The media files of a sample, as the key of everything said about them."""
    return tuple(map(str, sample.images + sample.audio))


def media_bags(samples: Sequence, tokenizer) -> dict[tuple[str, ...], list[int]]:
    """Per media item (key), the distinct token ids of every reply and reference caption about it in `samples`.

    The target of the bag-of-words loss (`train.aux_bow`): all the split says about an image, not only the
    reply of one sample (one question about colour says nothing about the shape; the image's bag has both).
    A sample whose meta has "item_labels" (a text per media item, in `media_key` order: what each window of a
    stream holds) also gives each of its items a bag of its own, keyed by that item alone (`sample_meta`'s
    "item_bow").
    """
    texts: dict[tuple[str, ...], set[str]] = {}
    for sample in samples:
        key = media_key(sample)
        if not key:
            continue
        replies = [text for role, text in sample.conversation() if role == "assistant"]
        texts.setdefault(key, set()).update(t.strip() for t in [*replies, *sample.captions] if t.strip())
        for item, label in zip(key, sample.meta.get("item_labels") or (), strict=False):
            texts.setdefault((item,), set()).add(label.strip())
    return {key: sorted({i for t in sorted(words) for i in tokenizer.encode(f" {t}")}) for key, words in texts.items()}


def sample_meta(sample, bags: dict | None = None) -> dict:
    """The batch meta of a sample (ids, texts, media paths), with its media bag as "bow" when `bags` is given, and
    each media item's own bag as "item_bow" (a list in `media_key` order) when the sample labels its items
    ("item_labels" in its meta, `media_bags`)."""
    meta = {"id": sample.id, "question": sample.question, "answers": sample.answers, "captions": sample.captions,
            "images": [str(p) for p in sample.images], "audio": [str(p) for p in sample.audio]}
    if bags is not None:
        key = media_key(sample)
        meta["bow"] = bags.get(key, [])
        if sample.meta.get("item_labels"):
            meta["item_bow"] = [bags.get((item,), []) for item in key]
    return meta


class ChatDataset(torch.utils.data.Dataset):
    """Samples encoded on access through the chat template (`train`: with the reply and its labels).

    `bags` (media key -> token ids, `media_bags`) adds each sample's media bag to its meta as "bow". A sample
    longer than `max_tokens` is cut or skipped as `overlong` says (`fit_length`): a skipped one comes out as
    (None, meta), which the collate drops and counts.
    """

    def __init__(self, samples: Sequence, template, *, train: bool, seed: int = 0, max_tokens: int | None = None,
                 bags: dict | None = None, overlong: str = "truncate"):
        self.samples, self.template, self.train = samples, template, train
        self.seed, self.max_tokens, self.bags, self.overlong = seed, max_tokens, bags, overlong
        self.placeholders = _placeholders(template)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        rng = random.Random(self.seed * 1_000_003 + index) if self.train else None
        encoded = self.template.encode_turns(to_turns(sample, rng, train=self.train), train=self.train)
        encoded, status = fit_length(encoded, self.max_tokens, self.overlong, self.placeholders, sample.id)
        return encoded, {**sample_meta(sample, self.bags), "overlong": status}


def _placeholders(template) -> set[int]:
    model = getattr(getattr(template, "model", None), "model", None)
    return set(getattr(model, "placeholder_ids", {}).values())


def to_turns(sample, rng: random.Random | None = None, *, train: bool = True, media: bool = True) -> list:
    """Chat `Turn`s of a data `Sample`; the first user turn carries its media (paths) unless `media` is False
    (then its media markers are dropped too). Without `train` the final assistant reply is left out."""
    from mmrwkv.data.template import Turn, parse_markers

    conversation = sample.conversation(rng)
    if not train and conversation and conversation[-1][0] == "assistant":
        conversation = conversation[:-1]
    turns = []
    for role, text in conversation:
        first_user = role == "user" and not any(t.role == "user" for t in turns)
        parts = parse_markers(text) if media else [p for p in parse_markers(text) if isinstance(p, str)]
        body = parts if any(not isinstance(p, str) for p in parts) else "".join(parts)
        with_media = first_user and media
        turns.append(Turn(role, body, images=list(sample.images) if with_media else [],
                          audio=list(sample.audio) if with_media else []))
    return turns


class GroupedChatDataset(torch.utils.data.Dataset):
    """Every question about one media item as one multi-turn conversation (the media lead the first turn).

    The order of the questions inside a conversation is a seeded shuffle, so any question type can come first
    (the first turn is exactly the single-question prompt that evaluation uses).
    """

    def __init__(self, samples: Sequence, template, *, seed: int = 0, max_tokens: int | None = None,
                 bags: dict | None = None, overlong: str = "truncate"):
        groups: dict[tuple, list] = {}
        for sample in samples:
            groups.setdefault(media_key(sample), []).append(sample)
        self.groups = list(groups.values())
        self.template, self.seed, self.max_tokens, self.bags = template, seed, max_tokens, bags
        self.overlong, self.placeholders = overlong, _placeholders(template)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int):
        group = list(self.groups[index])
        random.Random(self.seed * 1_000_003 + index).shuffle(group)
        turns = to_turns(group[0])
        for sample in group[1:]:
            turns += [t for t in to_turns(sample, media=False) if t.role != "system"]
        encoded = self.template.encode_turns(turns, train=True)
        # long groups are cut at the limit: later turns are dropped, never the media
        encoded, status = fit_length(encoded, self.max_tokens, self.overlong, self.placeholders, group[0].id)
        return encoded, {**sample_meta(group[0], self.bags), "overlong": status}


def make_collate(tokenizer):
    """Collate (Encoded, meta) pairs into the training batch contract."""
    from mmrwkv.data.template import collate

    pad = int(tokenizer.special.eos)

    def collate_pairs(pairs: list) -> dict:
        counts = {k: sum(m.get("overlong") == k for _, m in pairs) for k in ("truncated", "skipped")}
        kept = [(e, m) for e, m in pairs if e is not None]
        if not kept:  # every sample of the batch was too long: an empty batch the module steps over
            return {"input_ids": None, "overlong": counts, "meta": []}
        batch = collate([e for e, _ in kept], pad_id=pad, meta=[m for _, m in kept])
        batch["overlong"] = counts
        return batch

    return collate_pairs


GENERATED_KINDS = ("shapes", "tones")


def load_val_split(cfg: RecipeConfig):
    """The validation samples (`data.val_split`, capped at `eval.val_max_samples`), or None without a val split.

    An unknown split is refused with one line (generated kinds would otherwise generate any name asked for).
    """
    data = cfg.data
    if data.val_split is None:
        return None
    if data.kind in GENERATED_KINDS and data.val_split not in {*data.sizes, data.train_split, "val", "test"}:
        raise ConfigError(f"data.val_split: {data.val_split!r} is not a split of this {data.kind} data; "
                          f"known: {', '.join(sorted({*data.sizes, 'val', 'test'}))}")
    samples = load_split(data, data.val_split)
    if not len(samples):
        raise ConfigError(f"data.val_split: split {data.val_split!r} has no samples")
    return samples.subset(cfg.eval.val_max_samples, seed=data.seed)


def build_datasets(cfg: RecipeConfig, model, val=None):
    """(train dataset, val dataset or None, collate) for training `model` on the recipe's data.

    The val dataset (`data.val_split`, or the already loaded `val` samples) encodes its samples with their
    replies, for the validation loss; its `samples` are the raw ones the task metric generates for.
    """
    from mmrwkv.data.template import ChatTemplate

    d = cfg.data
    cache = MediaCache(model, max_bytes=d.media_cache_mb << 20)
    template = ChatTemplate(model.tokenizer, cfg.template.placement, model=cache)
    train = select_answer_types(load_split(d, d.train_split), d.answer_types)
    bags = media_bags(train, model.tokenizer) if cfg.train.aux_bow > 0 else None
    limits = {"max_tokens": d.max_text_tokens, "bags": bags, "overlong": d.overlong}
    if d.group_by_media:
        train_set = GroupedChatDataset(train, template, seed=d.seed, **limits)
    else:
        train_set = ChatDataset(train, template, train=True, seed=d.seed, **limits)
    val = load_val_split(cfg) if val is None else val
    val_set = None
    if val is not None:
        val_set = ChatDataset(val, template, train=True, seed=d.seed, **{**limits, "bags": None})
    return train_set, val_set, make_collate(model.tokenizer)


def check_vocabulary(model, source: str) -> None:
    """The tokenizer's ids must all have an embedding row: one line naming both sizes otherwise."""
    ids, rows = model.tokenizer.vocab_size, model.backbone.config.vocab_size
    if ids > rows:
        raise ConfigError(
            f"model.tokenizer: {cfg_tokenizer(model)!r} has {ids} token ids but "
            f"{source} embeds {rows} (vocab_size); use the checkpoint's own tokenizer or a model of >= {ids} rows"
        )


def cfg_tokenizer(model) -> str:
    """The tokenizer spec a model was built with (for messages)."""
    return str((model.config or {}).get("tokenizer", "the tokenizer"))
