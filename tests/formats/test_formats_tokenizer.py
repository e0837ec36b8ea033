"""World vocabulary files in the `rwkv_vocab_v20230424.txt` format: `id repr(token) byte_length` per line, str
literals for valid UTF-8 tokens and bytes literals for the rest, id 0 absent, LF or CRLF line endings."""

import random

import pytest

from mmrwkv.errors import TokenizerError
from mmrwkv.tokenizer import WorldTokenizer, find_world_vocab, load_tokenizer, parse_world_vocab

# tokens whose literals exercise every quoting rule of repr(): quotes, backslashes, escapes, multi-byte text,
# a partial UTF-8 sequence (bytes literal), spaces at either end
EXTRA = [" the", "\n\n", "'s", ' "', '"\'', "中", b"\xe4\xb8", "中文", "\\n", "User", ":", " Assistant", "  ",
         "\t\t", "\r\n", "é", b"\xc3", "\x7f", " ' '"]


def write_vocab(path, extra=EXTRA, newline="\n"):
    """The first 256 ids are the single bytes (str literal below 0x80, bytes literal above), as in the real file."""
    lines = []
    for b in range(256):
        literal = repr(chr(b)) if b < 128 else repr(bytes([b]))
        lines.append(f"{b + 1} {literal} 1")
    for i, token in enumerate(extra, start=257):
        raw = token if isinstance(token, bytes) else token.encode("utf-8")
        lines.append(f"{i} {token!r} {len(raw)}")
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


def _text(rng: random.Random) -> str:
    pieces = [" the", "\n\n", "'s", "中文", "\\n", "User", ": ", " Assistant", "é", "\r\n", "\t", "x", " ' '", '"']
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_fixture_vocab_parses_with_byte_lengths_and_both_line_endings(tmp_path, newline):
    table = parse_world_vocab(write_vocab(tmp_path / "vocab.txt", newline=newline))
    assert len(table) == 257 + len(EXTRA) and table[0] == b""
    assert table[129] == b"\x80" and table[11] == b"\n" and table[40] == b"'"
    assert table[257:] == [t if isinstance(t, bytes) else t.encode() for t in EXTRA]


@pytest.mark.parametrize("backend", ["python", "rust"])
def test_fixture_vocab_encodes_like_the_authors_reference(tmp_path, backend):
    trie = pytest.importorskip("rwkv.rwkv_tokenizer").TRIE_TOKENIZER
    path = write_vocab(tmp_path / "vocab.txt", newline="\r\n")
    ours, ref = WorldTokenizer(path, backend=backend, cache=False), trie(str(path))
    rng = random.Random(0)
    for _ in range(200):
        text = _text(rng)
        assert ours.encode(text) == ref.encode(text), text
        assert ours.decode(ours.encode(text)) == text


def test_longest_match_prefers_whole_tokens(tmp_path):
    tok = WorldTokenizer(write_vocab(tmp_path / "vocab.txt"), backend="python", cache=False)
    first = 257
    assert tok.encode("中文") == [first + EXTRA.index("中文")]
    assert tok.encode("中") == [first + EXTRA.index("中")]
    # "中国": the two-byte partial token, then the two single bytes left of 国
    ids = tok.encode("中国")
    assert tok.decode_bytes(ids) == "中国".encode() and ids[0] == first + EXTRA.index("中")


def test_vocab_without_every_byte_reports_the_byte_it_cannot_encode(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("1 'a' 1\n2 'b' 1\n3 'ab' 2\n")
    tok = WorldTokenizer(path, cache=False)
    assert tok.encode("abab") == [3, 3]
    with pytest.raises(TokenizerError, match="byte 0x63 at byte offset 2"):
        tok.encode("abc")
    with pytest.raises(TokenizerError, match="every single byte"):
        WorldTokenizer(path, backend="rust", cache=False)


@pytest.mark.parametrize("backend", ["python", "rust"])
def test_vocab_with_id_gaps_encodes_like_the_reference_and_refuses_gap_ids(tmp_path, backend):
    path = tmp_path / "gaps.txt"
    lines = [f"{b + 1} {repr(chr(b)) if b < 128 else repr(bytes([b]))} 1" for b in range(256)]
    path.write_text("\n".join(lines + ["300 'ab' 2", "1000 ' the' 4"]) + "\n")
    tok = WorldTokenizer(path, backend=backend, cache=False)
    assert tok.encode("ab the x") == [300, 1000, 33, 121]
    trie = pytest.importorskip("rwkv.rwkv_tokenizer").TRIE_TOKENIZER
    assert trie(str(path)).encode("ab the x") == [300, 1000, 33, 121]
    assert tok.decode([300, 1000]) == "ab the"
    with pytest.raises(TokenizerError, match=r"token id 500 is not in the World vocabulary .*gaps\.txt"):
        tok.decode([500])


def test_tokens_longer_than_255_bytes_load(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    long = "x" * 300
    path = write_vocab(tmp_path / "vocab.txt", extra=[long])
    for _ in range(2):
        tok = WorldTokenizer(path, backend="python")
        assert tok.encode(long + "x") == [257, 121]


@pytest.mark.parametrize(
    "line, problem",
    [("1 'a' 2", "does not match its length 2"), ("1 a 1", "malformed vocab line"), ("0 'a' 1", "bad or duplicate id")],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text(f"{line}\n")
    with pytest.raises(TokenizerError, match=rf"bad\.txt:1: .*{problem}"):
        parse_world_vocab(path)


def test_shipped_vocab_file_matches_the_reference_on_mixed_text():
    trie = pytest.importorskip("rwkv.rwkv_tokenizer").TRIE_TOKENIZER
    path = find_world_vocab()
    table = parse_world_vocab(path)
    assert len(table) == 65530 and all(table[1:])
    ref, ours = trie(str(path)), load_tokenizer(str(path))
    text = "User: Hello, 世界! Ça va?\n\nAssistant: 🙂 tabs\tand\r\nCRLF, numbers 12345, code `x = {'a': 1}`"
    assert ours.encode(text) == ref.encode(text)
    assert ours.decode(ours.encode(text)) == text
