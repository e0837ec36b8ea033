"""PTB tokenization of captions as the COCO caption evaluation does it: the Stanford PTBTokenizer jar shipped in
`pycocoevalcap` (run here with its input in our own temp dir, so a read-only package folder works), or a
pure-Python tokenizer with the same rules for machines without Java. Both lowercase and drop punctuation tokens."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

JAVA_LABEL = "java-ptb (stanford-corenlp 3.4.1, pycocoevalcap)"
PYTHON_LABEL = "python-ptb-like (no Java; approximates the PTB tokenizer)"
PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
PUNCTUATION |= {p.lower() for p in PUNCTUATION}
# brackets become -LRB- ... tokens in PTB and are dropped with them
_BRACKETS = {"(", ")", "[", "]", "{", "}"}


def _package_dir() -> Path:
    import pycocoevalcap

    return Path(pycocoevalcap.__path__[0])


def ptb_jar() -> Path:
    """The Stanford CoreNLP 3.4.1 jar shipped with pycocoevalcap."""
    return _package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


@functools.cache
def java_available() -> bool:
    """True when a working `java` is on PATH."""
    java = shutil.which("java")
    if java is None:
        return False
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _drop_punctuation(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATION)


def tokenize_java(sentences: Sequence[str], *, timeout: float = 300.0) -> list[str]:
    """Tokenize with the Stanford PTBTokenizer (one output line per input sentence)."""
    text = "\n".join(s.replace("\n", " ").replace("\r", " ") for s in sentences)
    with tempfile.TemporaryDirectory(prefix="mmrwkv-ptb-") as tmp:
        source = Path(tmp) / "sentences.txt"
        source.write_text(text, encoding="utf-8")
        cmd = ["java", "-Dfile.encoding=UTF-8", "-cp", str(ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", "-encoding", "UTF-8"]
        result = subprocess.run(cmd + [str(source)], cwd=tmp, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    lines = result.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [_drop_punctuation(line) for line in lines[: len(sentences)]]


_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "ave", "inc", "ltd", "co", "vs", "etc")
_CONTRACTION = re.compile(r"(?i)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na"}
_TOKEN_PARTS = [
    r"\d+(?:[.,:]\d+)+",  # numbers with separators: 3.5 1,000 5:30
    r"\.\.\.",  # ellipsis
    r"--",  # dash
    r"[!?]{2,}",  # repeated marks stay one token: !!! ??
    r"[a-z]\.(?:[a-z]\.)+",  # abbreviations: u.s. p.m.
    r"(?:" + "|".join(_ABBREVIATIONS) + r")\.(?!\w)",  # titles and short forms: mr. st.
    r"[#@]?[\w&]+(?:[-'/][\w&]+)*",  # words, hyphenated or with inner apostrophes; #tags, @names
    r"\S",  # any other single character
]
_TOKEN = re.compile("|".join(_TOKEN_PARTS))


def _split_word(token: str) -> list[str]:
    if token in _SPLIT_WORDS:
        return _SPLIT_WORDS[token].split()
    match = _CONTRACTION.search(token)
    if match and match.start() > 0:
        # "they'd've" -> they 'd 've
        return _split_word(token[: match.start()]) + [match.group(1)]
    return [token]


def tokenize_python(sentences: Sequence[str]) -> list[str]:
    """Pure-Python tokenizer with the PTB rules that matter for captions: lowercase, split punctuation and
    contractions ("n't", "'s", ...), keep hyphenated words and numbers whole, drop punctuation tokens."""
    out = []
    for sentence in sentences:
        text = sentence.replace("\n", " ").lower().replace('"', " '' ")
        # PTB writes em and en dashes as "--", a punctuation token
        text = text.replace("\u2014", " -- ").replace("\u2013", " -- ")
        tokens = []
        for token in _TOKEN.findall(text):
            tokens.extend(_split_word(token))
        out.append(" ".join(t for t in tokens if t not in PUNCTUATION and t not in _BRACKETS))
    return out


def tokenize_captions(captions: Mapping[str, Sequence[str]], backend: str = "auto") -> tuple[dict, str]:
    """Tokenize {id: [captions]}; backend "java", "python" or "auto" (Java when available).
    Returns ({id: [tokenized]}, label of the path used)."""
    if backend not in ("auto", "java", "python"):
        raise ValueError(f"unknown tokenizer backend {backend!r}; valid: auto, java, python")
    use_java = backend == "java" or (backend == "auto" and java_available())
    keys = [k for k, caps in captions.items() for _ in caps]
    flat = [c for caps in captions.values() for c in caps]
    tokens = tokenize_java(flat) if use_java else tokenize_python(flat)
    out: dict[str, list[str]] = {k: [] for k in captions}
    for key, line in zip(keys, tokens, strict=True):
        out[key].append(line)
    return out, JAVA_LABEL if use_java else PYTHON_LABEL
