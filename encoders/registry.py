"""Encoder registry: stable names users type in recipes (`open_clip`, `tiny_cnn`, ...) -> Encoder classes.

Built-in encoders register themselves when their module is imported; `build` and `list_encoders` import them on
first use, so `import mmrwkv.encoders` stays cheap (heavy libraries are imported inside constructors).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from mmrwkv.errors import ConfigError

_REGISTRY: dict[str, type] = {}
_BUILTIN_MODULES = (
    "mmrwkv.encoders.image.openclip",
    "mmrwkv.encoders.image.tvision",
    "mmrwkv.encoders.image.tiny",
    "mmrwkv.encoders.image.hf_vision",
    "mmrwkv.encoders.audio.whisper",
    "mmrwkv.encoders.audio.wav2vec",
)
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding an Encoder class under `name`; a name already taken by another class raises."""

    def decorator(cls: type) -> type:
        known = _REGISTRY.get(name)
        # re-importing the same module (e.g. importlib reload in tests) re-registers the same qualified class
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"encoder name {name!r} is already registered to {known.__module__}.{known.__qualname__}; "
                f"known encoders: {', '.join(sorted(_REGISTRY))}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_encoders() -> list[str]:
    """Sorted names of all registered encoders (built-in and user-registered)."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_encoder_class(name: str) -> type:
    """The class registered under `name`; an unknown name raises ConfigError listing the known ones."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_arguments(name: str, kwargs: dict) -> None:
    """Refuse (ConfigError) an unknown encoder name, an argument it does not take, or one of the wrong type, without
    building anything: recipes check this before they prepare data or models."""
    cls = get_encoder_class(name)
    kwargs = {k: v for k, v in kwargs.items() if k != "resize"}
    params = _accepted_arguments(cls)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"encoder {name!r}: unknown arguments {unknown}; valid arguments: {', '.join(params)}")
    hints = _argument_types(cls)
    for key, value in kwargs.items():
        if key in hints and not _fits(value, hints[key]):
            raise ConfigError(f"encoder {name!r}: argument {key} = {value!r:.60} is not of type {hints[key]}")


def check_specs(specs: dict) -> None:
    """`check_arguments` for a recipe's `encoders` section ({modality: EncoderSpec}), errors naming the modality."""
    for modality, spec in specs.items():
        try:
            check_arguments(spec.name, spec.kwargs)
        except ConfigError as err:
            raise ConfigError(f"encoders.{modality}: {err}") from None


def build(name: str, **kwargs):
    """Build the encoder registered under `name` with keyword arguments (its config).

    An argument the encoder does not take raises ConfigError listing the ones it does. Image encoders also take
    `resize` (crop | pad | squash | longest, see `ImagePreprocess`): how an image meets the encoder's square input.
    """
    check_arguments(name, kwargs)
    cls = get_encoder_class(name)
    kwargs = dict(kwargs)
    resize = kwargs.pop("resize", None)
    encoder = cls(**kwargs)
    if resize is not None:
        _set_resize(encoder, name, resize)
    return encoder


def _set_resize(encoder, name: str, resize: str) -> None:
    import dataclasses

    from mmrwkv.encoders.base import RESIZE_MODES

    preprocess = getattr(encoder, "image_preprocess", None)
    if preprocess is None:
        raise ConfigError(f"encoder {name!r}: resize applies to image encoders only")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"encoder {name!r}: resize {resize!r}; valid: crop, pad, squash, longest")
    encoder.image_preprocess = dataclasses.replace(preprocess, resize_mode=resize)


_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def _argument_types(cls: type) -> dict[str, str]:
    """Keyword argument -> its annotation as written, for the arguments of cls.__init__ and its parents'."""
    hints: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if init is not None:
            hints.update(
                {
                    k: v if isinstance(v, str) else getattr(v, "__name__", str(v))
                    for k, v in getattr(init, "__annotations__", {}).items()
                    if k != "return"
                }
            )
    return hints


def _fits(value, annotation: str) -> bool:
    """Whether `value` has a type the annotation allows; annotations other than unions of int, float, bool, str and
    None are not checked here (the encoder checks them)."""
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in _SIMPLE for part in parts):
        return True
    allowed = tuple(t for part in parts for t in _SIMPLE[part])
    # a bool is an int to Python, but `width: true` in a recipe is a mistake
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)


def _accepted_arguments(cls: type) -> list[str]:
    """Keyword arguments of cls.__init__, following **kwargs up to the parent classes' __init__."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))
