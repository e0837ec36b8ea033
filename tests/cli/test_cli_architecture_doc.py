"""docs/ARCHITECTURE.md stays true to the tree: every module, attribute and file it names exists, so a move or a
rename that forgets the document fails here."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
SOURCE_DIRS = ("mmrwkv", "kernels", "encoders", "demos", "recipes")
SUFFIXES = (".py", ".h", ".cpp", ".cu", ".cuh", ".sh", ".yaml")


def _dotted_names() -> list[str]:
    return sorted(set(re.findall(r"\bmmrwkv(?:\.[A-Za-z_][A-Za-z0-9_]*)+", DOC)))


def _paths() -> list[str]:
    found = re.findall(r"\b(?:mmrwkv|kernels|encoders|demos|recipes|tests|docs)/[A-Za-z0-9_./*-]*", DOC)
    # recipes/X.yaml, <dir>/NAME: placeholders
    return sorted({p.rstrip(".") for p in found if not any(part.split(".")[0].isupper() for part in p.split("/"))})


def _layout_files() -> list[str]:
    layout = re.search(r"## Layout\n```\n(.*?)```", DOC, re.S)
    assert layout, "docs/ARCHITECTURE.md has no Layout block"
    names = re.findall(r"(?<![\w/.])([A-Za-z0-9_]+(?:" + "|".join(re.escape(s) for s in SUFFIXES) + r"))\b", layout[1])
    return sorted(set(names) - {"X.yaml"})


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:
            continue
        if cut == len(parts):
            # a module is named: it exists (importing it may need an optional extra)
            return True
        obj = importlib.import_module(module)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_the_document_names_modules_and_files():
    assert len(_dotted_names()) >= 20 and len(_paths()) >= 5 and len(_layout_files()) >= 20


@pytest.mark.parametrize("name", _dotted_names())
def test_named_module_or_attribute_exists(name):
    assert _resolves(name), f"docs/ARCHITECTURE.md names {name}, which does not exist"


@pytest.mark.parametrize("path", _paths())
def test_named_path_exists(path):
    assert list(ROOT.glob(path.rstrip("/"))), f"docs/ARCHITECTURE.md names {path}, which does not exist"


@pytest.mark.parametrize("name", _layout_files())
def test_layout_file_exists(name):
    hits = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob(name)]
    assert hits, f"docs/ARCHITECTURE.md's Layout lists {name}, which is in none of {SOURCE_DIRS}"
