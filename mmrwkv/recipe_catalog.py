"""Recipes by name: the packaged recipes (`mmrwkv.recipes`), finding one by name, and validating a recipe file.

`resolve_recipe("llava_v7")` is the packaged `llava_v7.yaml` unless a file of that name exists here (a path always
wins, so a local copy made with `mmrwkv recipes copy` is what runs). `validate_recipe` checks what can be checked
without loading any weights or data: the types and choices of every field (all stages), that the files the recipe
names exist, and that an item's media tokens (encoder tokens after the projector, the count read from the encoder's
config on the meta device) plus the chat template's own tokens fit `data.max_text_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mmrwkv.errors import ConfigError, DataError, MMRWKVError

# the template's own tokens around a one-turn sample with media ("User: <media> question\n\nAssistant: answer\n\n")
# that every training sample needs on top of its media tokens; a conservative lower bound, not an estimate of text
TEMPLATE_TOKENS = 8


def packaged_recipes() -> dict[str, Path]:
    """Name -> file of every recipe shipped in the package (`recipes/*.yaml`, sub-folders as `folder/name`)."""
    root = resources.files("mmrwkv.recipes")
    out: dict[str, Path] = {}
    for path in sorted(Path(str(root)).rglob("*.yaml")):
        name = path.relative_to(Path(str(root))).with_suffix("").as_posix()
        out[name] = path
    return out


def resolve_recipe(spec: str | Path) -> Path:
    """A recipe file: `spec` itself when it exists, else the packaged recipe of that name (".yaml" optional)."""
    path = Path(spec)
    if path.is_file():
        return path
    known = packaged_recipes()
    name = str(spec).removesuffix(".yaml").removeprefix("recipes/")
    if name in known:
        return known[name]
    raise ConfigError(
        f"{spec}: recipe file not found, and no packaged recipe has that name; packaged recipes: "
        f"{', '.join(known) or 'none'} (`mmrwkv recipes list`)"
    )


def recipe_summary(path: Path) -> str:
    """The first line of a recipe's description (empty when it has none or does not parse)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    text = str(raw.get("description", "")) if isinstance(raw, dict) else ""
    return text.strip().split(". ")[0].split("\n")[0]


def copy_recipe(name: str, dest: str | Path, *, force: bool = False) -> Path:
    """Copy a packaged recipe to `dest` (a file, or a directory to put `<name>.yaml` in); never overwrites
    an existing file unless `force`."""
    source = resolve_recipe(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; pick another destination or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)
    return target


@dataclass
class Validation:
    """What `validate_recipe` found: `problems` make the recipe unusable here; `notes` are information."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_recipe(spec: str | Path, overrides=()) -> Validation:
    """Check a recipe without loading weights or data: types (every stage), files that exist, token budgets."""
    from mmrwkv.config import expand_stages, load_config

    path = resolve_recipe(spec)
    result = Validation(path)
    try:
        cfg = load_config(path, overrides)
        stages = expand_stages(cfg)
    except ConfigError as err:
        result.problems.append(str(err))
        return result
    seen: set[str] = set()
    produced: set[Path] = set()  # final checkpoints of earlier stages: a later stage may start from them
    for stage in stages:
        label = f"stage {stage.train.stage}: " if cfg.stages else ""
        start = stage.train.init_from
        missing_start = start is not None and Path(start) not in produced and not Path(start).exists()
        starts = [f"train.init_from: {start} not found (no earlier stage writes it)"] if missing_start else []
        for problem in [*starts, *_missing_files(stage), *_token_budget(stage, result.notes)]:
            if problem not in seen:
                seen.add(problem)
                result.problems.append(label + problem)
        produced.add(Path(stage.train.final_checkpoint))
    return result


def _missing_files(cfg) -> list[str]:
    """The files a config names that do not exist (checkpoint, tokenizer, data per split, encoder weights)."""
    from mmrwkv.data import PATH_ROLES, _roles

    problems = []
    if cfg.model.checkpoint is not None and cfg.train.init_from is None and not Path(cfg.model.checkpoint).exists():
        problems.append(f"model.checkpoint: {cfg.model.checkpoint} not found")
    if cfg.model.tokenizer.endswith(".json") and not Path(cfg.model.tokenizer).exists():
        problems.append(f"model.tokenizer: {cfg.model.tokenizer} not found")
    for modality, spec in cfg.encoders.items():
        for key in ("weights", "path"):
            value = spec.kwargs.get(key)
            if isinstance(value, str) and not Path(value).exists():
                problems.append(f"encoders.{modality}.{key}: {value} not found")
    if PATH_ROLES.get(cfg.data.kind):
        for split in dict.fromkeys([cfg.data.train_split, *cfg.data.paths]):
            try:
                _roles(cfg.data, split)
            except DataError as err:
                problems.append(str(err))
    return problems


def _token_budget(cfg, notes: list[str]) -> list[str]:
    """Media tokens of one item per modality (after the projector) + the template's, against max_text_tokens."""
    problems = []
    for modality, spec in cfg.encoders.items():
        try:
            tokens = encoder_tokens(spec.name, spec.kwargs)
        except MMRWKVError as err:
            problems.append(f"encoders.{modality}: {err}")
            continue
        if tokens is None:
            note = f"encoders.{modality} ({spec.name}): token count unknown before an item is seen; not checked"
            if note not in notes:
                notes.append(note)
            continue
        projector = cfg.projector.get(modality)
        reduced = _projected(tokens, projector)
        need = reduced + TEMPLATE_TOKENS
        note = f"encoders.{modality} ({spec.name}): {tokens} tokens per item, {reduced} after the projector"
        if note not in notes:
            notes.append(note)
        if need > cfg.data.max_text_tokens:
            problems.append(
                f"data.max_text_tokens: {cfg.data.max_text_tokens} is less than one {modality} item's {reduced} "
                f"tokens + {TEMPLATE_TOKENS} for the template; raise it or reduce the tokens (projector reduction)"
            )
    return problems


def _projected(tokens: int, projector) -> int:
    if projector is None or projector.reduction is None:
        return tokens
    from mmrwkv.encoders.projector import build_projector

    return build_projector(projector.kind, 1, 1, reduction=projector.reduction).num_tokens(tokens)


def encoder_tokens(name: str, kwargs: dict) -> int | None:
    """Tokens one item yields from encoder `name` built with `kwargs`, without loading weights.

    An encoder class may answer itself (`planned_tokens(**kwargs)`, e.g. from a local config file); open_clip ViTs
    are read from open_clip's architecture config; other image encoders are built on the meta device (no memory,
    no weights; `weights`/`pretrained` are dropped, they do not change the shape); audio encoders are built with
    random weights and give the count of their longest item (`max_seconds`). None when it cannot be known.
    """
    from mmrwkv.encoders import get_encoder_class

    cls = get_encoder_class(name)
    kept = {k: v for k, v in kwargs.items() if k not in ("weights", "pretrained")}
    planned = getattr(cls, "planned_tokens", None)
    if planned is not None:
        return planned(**kwargs)
    if name == "open_clip":
        return _open_clip_tokens(kept)
    encoder = _build_for_shape(name, kept, meta=getattr(cls, "modality", "") != "audio")
    if encoder is None:
        return None
    if encoder.modality == "image":
        return int(encoder.tokens_per_image) or None
    import torch

    with torch.no_grad():
        wave = torch.zeros(int(encoder.sample_rate * encoder.max_seconds))
        return int(encoder.num_tokens(encoder.features(wave)))


def _build_for_shape(name: str, kwargs: dict, *, meta: bool):
    import contextlib

    import torch

    from mmrwkv.encoders import build

    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return build(name, **kwargs)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - an encoder that cannot be built on the meta device: count unknown
        return None


def _open_clip_tokens(kwargs: dict) -> int | None:
    """Patch tokens (+ CLS) of an open_clip ViT from its architecture config; None for other towers."""
    import open_clip

    arch = kwargs.get("arch", "ViT-B-32")
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ConfigError(f"open_clip: unknown arch {arch!r}")
    vision = cfg.get("vision_cfg", {})
    size, patch = kwargs.get("image_size") or vision.get("image_size"), vision.get("patch_size")
    if not patch or not isinstance(vision.get("layers"), int):
        return None
    height, width = (size, size) if isinstance(size, int) else size
    return (height // patch) * (width // patch) + int(bool(kwargs.get("cls_token", False)))
