"""Typed YAML: raw mappings validated into dataclasses, `a.b.c=value` overrides, deep merges, diffs.

Generic machinery behind `mmrwkv.config` (which holds the recipe dataclasses); nothing here knows a recipe.
A dataclass may define `_from_raw(value, path)` (custom parsing), `_to_raw()` (its raw form) and `_check(path)`
(cross-field validation); a field's `metadata["choices"]` lists its valid values. Every error is a
`ConfigError` naming the dotted path of the offending value.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from mmrwkv.errors import ConfigError


def join_path(path: str, key: str) -> str:
    """`path.key`, or `key` at the top level."""
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, path: str) -> Any:
    """Validate `value` against type `tp`, building dataclasses; raise ConfigError naming `path`."""
    if hasattr(tp, "_from_raw"):
        return tp._from_raw(value, path)
    if dataclasses.is_dataclass(tp):
        return convert_dataclass(value, tp, path)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return _convert_union(value, tp, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): convert(v, item, join_path(path, str(k))) for k, v in value.items()}
    return _convert_scalar(value, tp, path)


def _convert_scalar(value: Any, tp: Any, path: str) -> Any:
    if tp is Any:
        return value
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        # YAML (a recipe or an override such as train.precision=32) reads a bare number as one; the field is text
        return str(value)
    if tp is float and isinstance(value, str):
        # PyYAML reads `1e-3` (no dot) as a string; accept any text that is a plain number.
        try:
            return float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
        type(None): value is None,
    }.get(tp)
    if ok is None:
        raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def _convert_union(value: Any, tp: Any, path: str) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got None")
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, path)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    names = " or ".join(_type_name(a) for a in args if a is not type(None))
    raise ConfigError(f"{path}: expected {names}, got {type(value).__name__} {value!r}")


def convert_dataclass(value: Any, tp: type, path: str) -> Any:
    """Build dataclass `tp` from a mapping: unknown keys, wrong types and bad choices raise naming the path."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path or 'recipe'}: expected a mapping, got {type(value).__name__} {value!r}")
    fields = {f.name: f for f in dataclasses.fields(tp)}
    hints = typing.get_type_hints(tp)
    kwargs = {}
    for key, raw in value.items():
        sub = join_path(path, str(key))
        if key not in fields:
            where = f"'{path}'" if path else "the recipe"
            raise ConfigError(f"unknown key '{sub}'; valid keys of {where}: {', '.join(fields)}")
        kwargs[key] = convert(raw, hints[key], sub)
        choices = fields[key].metadata.get("choices")
        if choices and kwargs[key] is not None and kwargs[key] not in choices:
            raise ConfigError(f"{sub}: invalid value {kwargs[key]!r}; valid choices: {', '.join(choices)}")
    obj = tp(**kwargs)
    if hasattr(obj, "_check"):
        obj._check(path)
    return obj


def to_raw(obj: Any) -> Any:
    """A dataclass tree as plain mappings, lists and scalars (what `convert` reads back to an equal object)."""
    if hasattr(obj, "_to_raw"):
        return obj._to_raw()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_raw(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_raw(v) for v in obj]
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and YAML-parsed value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r}: expected the form a.b.c=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.strip().split("."), parsed


def _list_index(items: list, key: str, where: str, label: str) -> int:
    """A list entry by position (`stages.0`) or, for a list of named mappings, by name (`stages.media`)."""
    if key.isdigit() and int(key) < len(items):
        return int(key)
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    if key in names:
        return names.index(key)
    valid = [str(i) for i in range(len(items))] + [str(n) for n in names if n is not None]
    raise ConfigError(f"{label}: '{where}' has no entry {key!r} (valid: {', '.join(valid) or 'none, it is empty'})")


def _set_path(raw: dict, keys: list[str], value: Any, label: str) -> None:
    node: dict | list = raw
    for i, key in enumerate(keys):
        if isinstance(node, list):
            key = _list_index(node, key, ".".join(keys[:i]), label)
        if i == len(keys) - 1:
            node[key] = value
            return
        child = node[key] if isinstance(node, list) else node.setdefault(key, {})
        if not isinstance(child, dict | list):
            raise ConfigError(f"{label}: '{'.'.join(keys[: i + 1])}' is {child!r}, not a section")
        node = child


def apply_overrides(raw: Mapping, overrides: Iterable[str]) -> dict:
    """Return a deep copy of the raw recipe mapping with each `a.b.c=value` override set. A list on the way is
    entered by position or, when its entries are named mappings, by name: `stages.media.train.max_steps=5`."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(out, keys, value, f"override {text!r}")
    return out


def deep_merge(base: dict, update: Mapping, label: str) -> dict:
    """Merge `update` into a copy of `base`; mappings merge key by key, dotted keys address nested fields."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        keys = str(key).split(".")
        node = out
        for part in keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{label}: '{key}' goes through a value that is not a section")
        last = keys[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = deep_merge(node[last], value, label)
        else:
            node[last] = copy.deepcopy(value)
    return out


_MISSING = object()


def diff_raw(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, old value, new value) of every leaf that differs between two raw mappings, in key order;
    a key present on one side only shows `<absent>` on the other."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = join_path(path, str(key))
            out += diff_raw(old.get(key, _MISSING), new.get(key, _MISSING), sub)
        return out
    if old == new:
        return []
    show = {id(_MISSING): "<absent>"}
    return [(path, show.get(id(old), old), show.get(id(new), new))]
