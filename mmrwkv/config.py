"""Recipe configs: YAML sections mapped one-to-one onto typed dataclasses, strictly validated.

A recipe is a YAML file whose top-level sections are the fields of `RecipeConfig`. Loading is strict: an unknown
key, a wrong type or a value outside a field's choices raises `ConfigError` naming the dotted path (`train.lrr`),
the problem and what is valid. Overrides `a.b.c=value` (value parsed as YAML) are applied to the raw mapping
before validation. Multi-stage recipes list `stages`; `expand_stages` turns them into one config per stage.
The generic typed-YAML machinery (conversion, overrides, merges, diffs) lives in `mmrwkv.config_convert`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# parse_override / apply_overrides / diff_raw are part of this module's API (re-exported)
from mmrwkv.config_convert import (
    apply_overrides,
    convert_dataclass,
    deep_merge,
    diff_raw,
    join_path,
    parse_override,
    to_raw,
)
from mmrwkv.errors import ConfigError
from mmrwkv.names import MODALITIES, PLACEMENTS, VERSIONS
from mmrwkv.sampling import SamplingConfig

__all__ = [
    "CAPTION_TOKENIZERS", "DATA_KINDS", "DATA_TASKS", "METRICS", "MODALITIES", "PLACEMENTS", "PRECISIONS",
    "STRATEGIES", "TRAINABLE_MODES", "OVERLONG", "LOGGERS", "VERSIONS", "WKV_BACKENDS",
    "DataConfig", "EncoderSpec", "EvalConfig", "GenerationConfig", "LRConfig", "ModelConfig", "ProjectorSpec",
    "RecipeConfig", "ReportConfig", "TemplateConfig", "TrainConfig", "TrainableConfig",
    "apply_overrides", "config_from_dict", "config_to_dict", "diff_raw", "expand_stages", "load_config",
    "parse_override", "save_config",
]

TRAINABLE_MODES = ("frozen", "full", "lora")
DATA_TASKS = ("auto", "vqa", "caption", "both")
DATA_KINDS = ("easy_vqa", "coco_captions", "coco_karpathy", "vqav2", "llava", "audiocaps", "clotho", "shapes", "tones",
              "streams")
PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "bf16-true")
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")
WKV_BACKENDS = ("reference", "chunked", "cuda", "triton", "fla")
OVERLONG = ("truncate", "skip", "error")
LOGGERS = ("csv", "tensorboard", "wandb")
METRICS = ("vqa_accuracy", "exact_match", "bleu", "meteor", "rouge_l", "cider", "spice", "spider")
CAPTION_TOKENIZERS = ("auto", "java", "python")
_PROJECTOR_KIND = re.compile(r"^(linear|mlp\d+x_gelu)$")
_REDUCTION = re.compile(r"^(avgpool|conv):[1-9]\d*$")


def _choices(*values: str) -> dict:
    return {"metadata": {"choices": values}}


@dataclass
class ModelConfig:
    """Backbone to build or load, and the tokenizer.

    Either `size` (a name from `mmrwkv.rwkv` SIZES, e.g. "v7-tiny") builds a fresh model, or `checkpoint` (an
    official `.pth` or one of our checkpoint directories) starts from trained weights. `tokenizer` is "world",
    a `tokenizer.json` path, or "bpe" (trained on the recipe's data with `bpe_vocab_size` entries).
    """

    version: str | None = field(default=None, **_choices(*VERSIONS))
    size: str | None = "v7-tiny"
    checkpoint: str | None = None
    tokenizer: str = "world"
    bpe_vocab_size: int = 4096
    overrides: dict[str, Any] = field(default_factory=dict)

    def _check(self, path: str) -> None:
        if self.size is None and self.checkpoint is None:
            raise ConfigError(f"{path}: set either 'size' (a named model size) or 'checkpoint' (a path)")
        if self.tokenizer not in ("world", "bpe") and not self.tokenizer.endswith(".json"):
            raise ConfigError(
                f"{path}.tokenizer: {self.tokenizer!r} is not a tokenizer spec; use 'world', 'bpe' or a "
                "tokenizer.json path"
            )
        if self.bpe_vocab_size < 260:
            raise ConfigError(f"{path}.bpe_vocab_size: {self.bpe_vocab_size} is too small (need >= 260)")
        if self.size is not None and self.checkpoint is None:
            _check_size(self, path)


def _check_size(model: ModelConfig, path: str) -> None:
    """Check the size name (and the version, when given) against the model sizes table."""
    try:
        from mmrwkv.rwkv.config import SIZES
    except ImportError:
        return
    if model.size not in SIZES:
        raise ConfigError(f"{path}.size: unknown model size {model.size!r}; valid sizes: {', '.join(sorted(SIZES))}")
    version = model.overrides.get("version", SIZES[model.size].fields.get("version"))
    if model.version is not None and version is not None and model.version != version:
        raise ConfigError(
            f"{path}.version: {model.version!r} does not match size {model.size!r} (version {version!r}); "
            "drop model.version or pick a size of that generation"
        )


@dataclass
class EncoderSpec:
    """One modality's encoder: a registry `name` plus keyword arguments (YAML: `{name: open_clip, arch: ...}`)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_raw(cls, value: Any, path: str) -> EncoderSpec:
        if isinstance(value, str):
            return cls(name=value)
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            raise ConfigError(f"{path}: expected a mapping with a string 'name' (encoder registry name), got {value!r}")
        return cls(name=value["name"], kwargs={k: v for k, v in value.items() if k != "name"})

    def _to_raw(self) -> dict:
        return {"name": self.name, **self.kwargs}


@dataclass
class ProjectorSpec:
    """One modality's projector: `kind` ("linear", "mlp2x_gelu", ...) and optional `reduction` ("avgpool:4").

    YAML accepts the mapping or the shorthand string "mlp2x_gelu" / "mlp2x_gelu+avgpool:4".
    """

    kind: str = "mlp2x_gelu"
    reduction: str | None = None

    @classmethod
    def _from_raw(cls, value: Any, path: str) -> ProjectorSpec:
        if isinstance(value, str):
            kind, _, reduction = value.partition("+")
            value = {"kind": kind.strip(), "reduction": reduction.strip() or None}
        return convert_dataclass(value, cls, path)

    def _check(self, path: str) -> None:
        if not _PROJECTOR_KIND.match(self.kind):
            raise ConfigError(f"{path}.kind: {self.kind!r} is not a projector; valid: linear, mlp<N>x_gelu")
        if self.reduction is not None and not _REDUCTION.match(self.reduction):
            raise ConfigError(f"{path}.reduction: {self.reduction!r} is not a reduction; valid: avgpool:<k>, conv:<k>")


@dataclass
class TrainableConfig:
    """Which parts train: each of encoder / projector / backbone is frozen, full, or lora (rank, alpha)."""

    encoder: str = field(default="frozen", **_choices(*TRAINABLE_MODES))
    projector: str = field(default="full", **_choices(*TRAINABLE_MODES))
    backbone: str = field(default="frozen", **_choices(*TRAINABLE_MODES))
    lora_rank: int = 8
    lora_alpha: float = 16.0


@dataclass
class DataConfig:
    """Dataset: `kind`, per-split file paths, per-split sizes, seed and bad-record policy.

    `paths[split]` maps a reader's file roles to paths, e.g. `{questions: q.json, annotations: a.json,
    images: val2014/}`. Generated kinds (shapes, tones) write into `root` and use `sizes[split]` samples;
    reader kinds cap a split at `sizes[split]` (a seeded subset) when given. `task` picks the samples of the
    generated kinds (captioning, VQA or both; "auto" = both); reader kinds have one task each. `generator`
    holds options of the generated kinds (shapes: image_size, max_shapes, ...; tones: max_events, ...).
    `coco_karpathy` reads COCO's Karpathy split file (`{karpathy: dataset_coco.json, images: <COCO root>}`): the
    split name picks its images (train = train + restval, val, test).
    """

    kind: str = field(default="easy_vqa", **_choices(*DATA_KINDS))
    task: str = field(default="auto", **_choices(*DATA_TASKS))
    root: str | None = None
    paths: dict[str, dict[str, str]] = field(default_factory=dict)
    train_split: str = "train"
    # the split whose loss (and task metric) is measured during training; None: no validation
    val_split: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    skip_bad_records: bool = False
    # media paths inside a dataset file must stay inside its data root (no absolute paths, no `..`) unless true
    allow_outside_paths: bool = False
    # longest training sequence in tokens (text plus media slots)
    max_text_tokens: int = 256
    # a longer training sample: "truncate" (text cut at the limit, media slots kept whole; skipped when its media
    # alone do not fit), "skip", or "error"; the stage logs how many samples were cut or skipped
    overlong: str = field(default="truncate", **_choices(*OVERLONG))
    # batches of similar length (shuffled mega-batches sorted by length, as LLaVA's group_by_modality_length)
    group_by_length: bool = False
    # preprocessed media kept for reuse per data-loading process, in MiB (least recently used dropped first; 0: none)
    media_cache_mb: int = 256
    # training only: all questions about one media item become one multi-turn conversation (LLaVA-1.5 style)
    group_by_media: bool = False
    # training only: keep the questions of these answer types (e.g. [other] = open questions; empty = all). A stage
    # on the open questions first teaches the model to read the media before yes/no questions join (a curriculum)
    answer_types: list[str] = field(default_factory=list)


@dataclass
class LRConfig:
    """Learning rate per parameter group."""

    projector: float = 1e-3
    encoder: float = 1e-5
    backbone: float = 1e-4


@dataclass
class TrainConfig:
    """Optimisation, schedule, hardware and checkpointing for one training stage."""

    stage: str = "finetune"
    init_from: str | None = None
    lr: LRConfig = field(default_factory=LRConfig)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    cosine: bool = True
    min_lr_ratio: float = 0.1
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    # samples per optimizer step over all devices: sets grad_accum = global / (batch_size x devices) at launch
    global_batch_size: int | None = None
    grad_clip: float = 1.0
    # recompute each backbone block's activations in the backward pass (memory for compute)
    grad_checkpoint: bool = False
    # weight of a bag-of-words loss that trains media encoders directly (0: off; `MultimodalLM`)
    aux_bow: float = 0.0
    # weight of the language-model loss; 0 (with aux_bow > 0) trains only the media path, without the backbone
    lm_weight: float = 1.0
    precision: str = field(default="32", **_choices(*PRECISIONS))
    strategy: str = field(default="auto", **_choices(*STRATEGIES))
    devices: int | str = "auto"
    checkpoint_every: int = 0
    output_dir: str = "runs/default"
    seed: int = 0
    wkv_backend: str | None = field(default=None, **_choices(*WKV_BACKENDS))
    num_workers: int = 0
    log_every: int = 10
    # validation (data.val_split) every this many optimizer steps; 0: once, at the end of the stage
    eval_every: int = 0
    # the metric that picks the best checkpoint (`<output_dir>/best`), e.g. "val/loss" or "val/cider"; None: no
    # best checkpoint. Losses are minimised, task metrics maximised
    best_metric: str | None = None
    # stop a stage after this many validations without a better best_metric (0: never)
    early_stop_patience: int = 0
    # extra loggers beside the CSV log (which curves.png reads): tensorboard, wandb (WANDB_MODE=offline works offline)
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: str | None = None

    @property
    def final_checkpoint(self) -> Path:
        """Where this stage's final checkpoint directory goes (the next stage starts from it)."""
        return Path(self.output_dir) / "final"

    def _check(self, path: str) -> None:
        positive = ("epochs", "batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.global_batch_size is not None and self.global_batch_size % self.batch_size:
            raise ConfigError(f"{path}.global_batch_size: {self.global_batch_size} is not a multiple of "
                              f"{path}.batch_size {self.batch_size}")
        for i, name in enumerate(self.loggers):
            if name not in LOGGERS:
                raise ConfigError(f"{path}.loggers[{i}]: unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
        if self.early_stop_patience and not self.best_metric:
            raise ConfigError(f"{path}.early_stop_patience: needs {path}.best_metric (the metric it watches)")
        for name in ("aux_bow", "lm_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.lm_weight == 0 and self.aux_bow == 0:
            raise ConfigError(f"{path}.lm_weight: 0 needs {path}.aux_bow > 0 (otherwise nothing is trained)")
        if isinstance(self.devices, str) and self.devices != "auto":
            raise ConfigError(f"{path}.devices: expected an int or 'auto', got {self.devices!r}")


@dataclass
class ReportConfig:
    """Evaluation report: where to write it, how many examples to show, thumbnails, curve plot."""

    dir: str | None = None
    num_examples: int = 8
    thumbnails: bool = True
    curves: bool = True


@dataclass
class EvalConfig:
    """Evaluation split, limits, metrics and report settings."""

    split: str = "val"
    max_samples: int | None = None
    # samples of data.val_split scored during training (loss and task metrics)
    val_max_samples: int = 200
    batch_size: int = 8
    # empty: by the data's task (captions: cider, bleu, meteor, rouge_l; VQAv2: vqa_accuracy; else exact_match)
    metrics: list[str] = field(default_factory=list)
    caption_tokenizer: str = field(default="auto", **_choices(*CAPTION_TOKENIZERS))
    report: ReportConfig = field(default_factory=ReportConfig)

    def _check(self, path: str) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(
                f"{path}.max_samples: must be >= 1 (or null for the whole split), got {self.max_samples}"
            )
        for i, metric in enumerate(self.metrics):
            if metric not in METRICS:
                raise ConfigError(f"{path}.metrics[{i}]: unknown metric {metric!r}; valid: {', '.join(METRICS)}")


@dataclass
class GenerationConfig(SamplingConfig):
    """Decoding settings of a recipe: `SamplingConfig` with recipe defaults (short answers that end a turn)."""

    max_tokens: int = 64
    stop: list[str] = field(default_factory=lambda: ["\n\n"])

    def __post_init__(self):
        # checked by `_check`, which names the recipe path
        pass

    def _check(self, path: str) -> None:
        problem = self.problem()
        if problem:
            raise ConfigError(f"{path}.{problem}")

    def to_sampling(self) -> SamplingConfig:
        """The generator's `SamplingConfig` with these values."""
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingConfig)})


@dataclass
class TemplateConfig:
    """Chat template: where media go in the prompt, and an optional system prompt."""

    placement: str = field(default="inline", **_choices(*PLACEMENTS))
    system: str | None = None


@dataclass
class RecipeConfig:
    """A complete recipe. `stages` holds raw per-stage overrides; see `expand_stages`."""

    name: str = "recipe"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    encoders: dict[str, EncoderSpec] = field(default_factory=dict)
    projector: dict[str, ProjectorSpec] = field(default_factory=dict)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    stages: list[dict[str, Any]] = field(default_factory=list)

    def _check(self, path: str) -> None:
        for section in ("encoders", "projector"):
            for modality in getattr(self, section):
                if modality not in MODALITIES:
                    raise ConfigError(
                        f"{join_path(path, section)}: unknown modality {modality!r}; valid: {', '.join(MODALITIES)}"
                    )
        for i, stage in enumerate(self.stages):
            if not isinstance(stage.get("name"), str):
                raise ConfigError(f"{join_path(path, 'stages')}[{i}]: every stage needs a string 'name', got {stage!r}")


def _coerce_version(raw: Mapping) -> None:
    """YAML reads `version: 7` as an int and `5.2` as a float; a version is a string."""
    model = raw.get("model")
    if (
        isinstance(model, dict)
        and isinstance(model.get("version"), int | float)
        and not isinstance(model.get("version"), bool)
    ):
        model["version"] = str(model["version"])


def config_from_dict(raw: Mapping | None, overrides: Iterable[str] = (), *, source: str = "recipe") -> RecipeConfig:
    """Validate a raw recipe mapping (after overrides) into a `RecipeConfig`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    merged = apply_overrides(raw, overrides)
    _coerce_version(merged)
    try:
        cfg = convert_dataclass(merged, RecipeConfig, "")
        for i, _ in enumerate(cfg.stages):
            _stage_config(cfg, i)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RecipeConfig:
    """Read a YAML recipe, apply `a.b.c=value` overrides, validate strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the recipe ({err.strerror or err})") from None
    return config_from_dict(raw, overrides, source=str(path))


def config_to_dict(cfg: RecipeConfig) -> dict:
    """The resolved config as a plain mapping that `config_from_dict` reads back to an equal config."""
    return to_raw(cfg)


def save_config(cfg: RecipeConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (saved beside every checkpoint); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _stage_config(cfg: RecipeConfig, index: int, init_from: str | None = None) -> RecipeConfig:
    stage = dict(cfg.stages[index])
    name = stage.pop("name")
    base = config_to_dict(cfg)
    base["stages"] = []
    label = f"stages[{index}] ({name})"
    explicit = deep_merge({}, stage, label).get("train", {})
    merged = deep_merge(base, stage, label)
    train = merged.setdefault("train", {})
    train["stage"] = name
    # a stage's own output_dir / init_from win over the chain
    if "output_dir" not in explicit:
        train["output_dir"] = str(Path(cfg.train.output_dir) / name)
    if init_from is not None and "init_from" not in explicit:
        train["init_from"] = init_from
    _coerce_version(merged)
    try:
        return convert_dataclass(merged, RecipeConfig, "")
    except ConfigError as err:
        raise ConfigError(f"stages[{index}] ({name}): {err}") from None


def expand_stages(cfg: RecipeConfig) -> list[RecipeConfig]:
    """One config per stage, in order; each stage writes to `<output_dir>/<stage name>` and starts from the
    previous stage's `train.final_checkpoint`, unless the stage sets `train.output_dir` / `train.init_from`
    itself. A recipe without stages yields itself."""
    if not cfg.stages:
        return [cfg]
    out: list[RecipeConfig] = []
    for i in range(len(cfg.stages)):
        previous = str(out[-1].train.final_checkpoint) if out else None
        out.append(_stage_config(cfg, i, previous))
    return out
