"""Tokenizers: the RWKV World tokenizer, Hugging Face `tokenizer.json` files, byte-level BPE training.

Every tokenizer follows the `Tokenizer` protocol and carries `SpecialIds`: reserved ids for media
placeholders, chat roles and end-of-text that no user text can ever encode to. `decode` renders a reserved
id as a visible marker such as `<|image|>` (the marker *text* encodes to ordinary tokens, never back to the
id); an id outside the vocabulary is rejected with `TokenizerError`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.resources
import importlib.util
import os
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

from mmrwkv.errors import TokenizerError

WORLD_VOCAB_NAME = "rwkv_vocab_v20230424.txt"
# Packages that ship the authors' World vocabulary file (identical content; line endings differ).
_WORLD_VOCAB_PACKAGES = ("rwkv", "pyrwkv_tokenizer")
_CACHE_MAGIC = b"MMRWKV-WORLD-1\n"


@dataclass(frozen=True)
class SpecialIds:
    """Reserved token ids. `eos` ends a generation; the others are placeholders the chat template writes."""

    image: int
    audio: int
    eos: int
    system: int
    user: int
    assistant: int

    def names(self) -> dict[int, str]:
        """Map each reserved id to its name."""
        return {getattr(self, f.name): f.name for f in fields(self)}

    def ids(self) -> frozenset[int]:
        """All reserved ids."""
        return frozenset(self.names())


@runtime_checkable
class Tokenizer(Protocol):
    """What generation, chat and training need from a tokenizer."""

    special: SpecialIds

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...


def _marker(name: str) -> str:
    return f"<|{name}|>"


def _utf8(text: str) -> bytes:
    if not isinstance(text, str):
        raise TokenizerError(f"encode expects str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TokenizerError(f"text is not encodable as UTF-8 at position {err.start}: {err.reason}") from err


def find_world_vocab() -> Path:
    """Locate the authors' World vocabulary file in an installed package (`rwkv` or `pyrwkv_tokenizer`)."""
    for package in _WORLD_VOCAB_PACKAGES:
        if importlib.util.find_spec(package) is None:
            continue
        candidate = importlib.resources.files(package) / WORLD_VOCAB_NAME
        if candidate.is_file():
            return Path(str(candidate))
    raise TokenizerError(
        f"World vocabulary {WORLD_VOCAB_NAME} not found: install `rwkv` or `pyrwkv-tokenizer`, "
        "or pass an explicit vocab path"
    )


def parse_world_vocab(path: Path) -> list[bytes]:
    """Parse a World vocab file (`id repr(str-or-bytes) length` per line) into a table indexed by id.

    Index 0, and any id the file skips, is `b""` (not in the vocabulary). Entries are parsed with
    `ast.literal_eval`, never `eval`.
    """
    table: dict[int, bytes] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            try:
                idx = int(line[: line.index(" ")])
                value = ast.literal_eval(line[line.index(" ") : line.rindex(" ")].strip())
                length = int(line[line.rindex(" ") :])
            except (ValueError, SyntaxError) as err:
                raise TokenizerError(f"{path}:{lineno}: malformed vocab line {line[:60]!r}: {err}") from err
            value = value.encode("utf-8") if isinstance(value, str) else value
            if not isinstance(value, bytes) or len(value) != length or not value:
                raise TokenizerError(f"{path}:{lineno}: token {value!r} does not match its length {length}")
            if idx <= 0 or idx in table:
                raise TokenizerError(f"{path}:{lineno}: bad or duplicate id {idx}")
            table[idx] = value
    if not table:
        raise TokenizerError(f"{path}: no vocabulary entries")
    # ids may leave gaps (the authors' reader keys a dict by id); a gap decodes to nothing and is never encoded
    return [b""] + [table.get(i, b"") for i in range(1, max(table) + 1)]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmrwkv"


def _read_cache(path: Path) -> list[bytes] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_CACHE_MAGIC):
        return None
    n = int.from_bytes(data[len(_CACHE_MAGIC) : len(_CACHE_MAGIC) + 4], "little")
    start = len(_CACHE_MAGIC) + 4
    lengths = array("B", data[start : start + n])
    table, pos = [], start + n
    for length in lengths:
        table.append(data[pos : pos + length])
        pos += length
    return table if pos == len(data) else None


def _write_cache(path: Path, table: list[bytes]) -> None:
    if any(len(t) > 255 for t in table):
        # the cache stores one length byte per token; a longer token only costs the cache
        return
    lengths = array("B", (len(t) for t in table))
    blob = _CACHE_MAGIC + len(table).to_bytes(4, "little") + lengths.tobytes() + b"".join(table)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(blob)
        os.replace(tmp.name, path)
    except OSError:
        # A read-only home only costs speed: the next load parses the text file again.
        return


def load_world_table(path: Path, *, cache: bool = True) -> list[bytes]:
    """The id -> bytes table of a World vocab file, via a binary cache keyed by the file's content hash."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise TokenizerError(f"cannot read World vocab {path}: {err}") from err
    cache_path = _cache_dir() / f"world-{hashlib.sha256(raw).hexdigest()[:20]}.bin"
    table = _read_cache(cache_path) if cache else None
    if table is None:
        table = parse_world_vocab(Path(path))
        if cache:
            _write_cache(cache_path, table)
    return table


class _PyLongestMatch:
    """Greedy longest match over bytes in pure Python: the fallback when the compiled encoder is missing.

    A set of every token prefix plays the trie: extend the match while the slice is a prefix of some token,
    remembering the longest slice that is a whole token.
    """

    def __init__(self, table: Sequence[bytes]):
        self.token_to_id = {tok: i for i, tok in enumerate(table) if tok}
        self.prefixes = {tok[:j] for tok in self.token_to_id for j in range(1, len(tok) + 1)}

    def encode(self, src: bytes) -> list[int]:
        ids, i, n = [], 0, len(src)
        token_to_id, prefixes = self.token_to_id, self.prefixes
        while i < n:
            # in the World vocabulary every single byte is a token, so a match of length 1 exists
            best, j = i + 1, i + 2
            while j <= n and src[i:j] in prefixes:
                if src[i:j] in token_to_id:
                    best = j
                j += 1
            token = token_to_id.get(src[i:best])
            if token is None:
                raise TokenizerError(f"byte {src[i]:#04x} at byte offset {i} has no token in this vocabulary")
            ids.append(token)
            i = best
        return ids


def _compiled_encoder(path: Path):
    """The Rust World encoder from `pyrwkv-tokenizer` (ids verified identical in tests), or None."""
    if importlib.util.find_spec("pyrwkv_tokenizer") is None:
        return None
    import pyrwkv_tokenizer

    return pyrwkv_tokenizer.WorldTokenizer(str(path))


class WorldTokenizer:
    """The RWKV World tokenizer: greedy longest match over UTF-8 bytes, ids identical to the authors'.

    Vocabulary ids 1..65529; id 0 is end-of-text (as the authors' models use it); 65530..65535 are reserved
    for media placeholders and chat roles. `backend`: "auto" (compiled encoder when installed), "rust", "python".
    """

    vocab_size = 65536
    special = SpecialIds(image=65530, audio=65531, eos=0, system=65532, user=65533, assistant=65534)

    def __init__(self, vocab_path: str | Path | None = None, *, backend: str = "auto", cache: bool = True):
        path = Path(vocab_path) if vocab_path is not None else find_world_vocab()
        self.vocab_path = path
        self.table = load_world_table(path, cache=cache)
        if len(self.table) > min(self.special.ids() - {0}):
            raise TokenizerError(f"{path}: vocabulary reaches id {len(self.table) - 1}, overlapping reserved ids")
        if backend not in ("auto", "rust", "python"):
            raise TokenizerError(f"unknown World tokenizer backend {backend!r}; use 'auto', 'rust' or 'python'")
        # the compiled encoder silently drops bytes a vocabulary cannot encode; only the Python one reports them
        all_bytes = {bytes([b]) for b in range(256)} <= set(self.table)
        self._rust = _compiled_encoder(path) if backend != "python" and all_bytes else None
        if backend == "rust" and self._rust is None:
            raise TokenizerError(
                "backend 'rust' needs the `pyrwkv-tokenizer` package"
                if all_bytes
                else f"{path}: backend 'rust' needs a vocabulary with every single byte as a token"
            )
        self._py: _PyLongestMatch | None = None
        self._names = self.special.names()

    @property
    def backend(self) -> str:
        return "rust" if self._rust is not None else "python"

    def _python(self) -> _PyLongestMatch:
        if self._py is None:
            self._py = _PyLongestMatch(self.table)
        return self._py

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (never a reserved id)."""
        src = _utf8(text)
        if self._rust is not None:
            return self._rust.encode(text)
        return self._python().encode(src)

    def encode_bytes(self, src: bytes) -> list[int]:
        """Token ids of arbitrary bytes (not necessarily valid UTF-8)."""
        return self._python().encode(bytes(src))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of `ids`; a reserved id becomes its marker, e.g. b"<|image|>"."""
        table, names, out = self.table, self._names, []
        for i in ids:
            i = int(i)
            if 0 < i < len(table) and table[i]:
                out.append(table[i])
            elif i in names:
                out.append(_marker(names[i]).encode())
            else:
                raise TokenizerError(
                    f"token id {i} is not in the World vocabulary {self.vocab_path} (ids 1..{len(table) - 1})"
                )
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------
# Hugging Face tokenizers
# ---------------------------------------------------------------------------------------------------------

_HF_SPECIAL = {name: _marker(name) for name in ("image", "audio", "system", "user", "assistant")}
_HF_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of the byte-level alphabet (each byte shown as a printable character)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer with reserved special ids user text never encodes to.

    Missing reserved tokens (`<|image|>`, `<|audio|>`, `<|system|>`, `<|user|>`, `<|assistant|>`, and an
    end-of-text token when the file has none) are added as special tokens; special tokens are encoded as
    plain text, so typing `<|image|>` yields ordinary tokens.
    """

    def __init__(self, tokenizer, source: str = "<memory>"):
        self.source = source
        self._tok = tokenizer
        ids = {name: self._ensure(marker) for name, marker in _HF_SPECIAL.items()}
        ids["eos"] = self._eos_id()
        self.special = SpecialIds(**ids)
        self._tok.encode_special_tokens = True
        self._names = self.special.names()
        self._byte_decoder = _gpt2_byte_decoder() if self._is_byte_level() else None

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenizer:
        """Load a `tokenizer.json` file."""
        from tokenizers import Tokenizer as _HF

        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist")
        try:
            return cls(_HF.from_file(str(path)), source=str(path))
        except Exception as err:  # the Rust library raises a bare Exception on malformed JSON
            raise TokenizerError(f"cannot load tokenizer {path}: {err}") from err

    def _ensure(self, content: str) -> int:
        from tokenizers import AddedToken

        # also when the file has it already: an added token that is not special would still be matched in user
        # text (encode_special_tokens only keeps *special* tokens from matching), so it is made special
        self._tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        return self._tok.token_to_id(content)

    def _eos_id(self) -> int:
        for content in _HF_EOS_CANDIDATES:
            if self._tok.token_to_id(content) is not None:
                return self._ensure(content)
        return self._ensure(_HF_EOS_CANDIDATES[0])

    def _is_byte_level(self) -> bool:
        decoder = self._tok.decoder
        return decoder is not None and type(decoder).__name__ == "ByteLevel"

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (never a reserved id)."""
        _utf8(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def _check(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(
                    f"token id {i} is outside the vocabulary of {self.source} (0..{self.vocab_size - 1})"
                )
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Bytes of `ids` (exact per token for byte-level tokenizers); reserved ids become markers."""
        ids = self._check(ids)
        if self._byte_decoder is None:
            return self.decode(ids).encode("utf-8")
        out = bytearray()
        for i in ids:
            if i in self._names:
                out += _marker(self._names[i]).encode()
                continue
            token = self._tok.id_to_token(i)
            if self._tok.token_to_id(token) is not None and all(c in self._byte_decoder for c in token):
                out += bytes(self._byte_decoder[c] for c in token)
            else:
                out += self._tok.decode([i], skip_special_tokens=False).encode("utf-8")
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; reserved ids become markers."""
        ids = self._check(ids)
        if self._byte_decoder is not None:
            return self.decode_bytes(ids).decode("utf-8", errors="replace")
        parts, run = [], []
        for i in ids:
            if i in self._names:
                parts.append(self._tok.decode(run) + _marker(self._names[i]))
                run = []
            else:
                run.append(i)
        return "".join(parts) + self._tok.decode(run)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer (with its reserved tokens) as `tokenizer.json`."""
        self._tok.save(str(path))


def train_bpe(texts: Iterable[str], vocab_size: int, path: str | Path | None = None) -> HFTokenizer:
    """Train a byte-level BPE tokenizer on `texts`; reserved tokens take ids 0..5. Saved to `path` if given."""
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    specials = [_HF_EOS_CANDIDATES[0], *_HF_SPECIAL.values()]
    if vocab_size < 256 + len(specials):
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {256 + len(specials)}"
        )
    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    result = HFTokenizer(tok, source="<trained BPE>")
    if path is not None:
        result.save(path)
        result.source = str(path)
    return result


@functools.lru_cache(maxsize=4)
def _shared_world(path: str) -> WorldTokenizer:
    # World tokenizers are immutable: one instance per vocab file spares every caller the load
    return WorldTokenizer(path)


def load_tokenizer(spec: str | Path = "world") -> Tokenizer:
    """`"world"` (default), a World vocab `.txt`, a `tokenizer.json`, or a directory holding `tokenizer.json`."""
    if str(spec) == "world":
        return _shared_world(str(find_world_vocab()))
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix == ".txt" and path.is_file():
        return _shared_world(str(path.resolve()))
    if path.suffix == ".json" or path.is_file():
        return HFTokenizer.from_file(path)
    raise TokenizerError(f"unknown tokenizer {str(spec)!r}: use 'world', a tokenizer.json path or a World vocab .txt")
