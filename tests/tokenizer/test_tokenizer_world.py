"""World tokenizer: ids identical to the authors' TRIE_TOKENIZER, exact round trips, reserved ids, vocab cache."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrwkv.errors import TokenizerError
from mmrwkv.tokenizer import WorldTokenizer, find_world_vocab, load_tokenizer, parse_world_vocab

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 3:45pm -- isn't it?",
    "人工智能正在改变世界，我们需要负责任地发展它。",
    "吾輩は猫である。名前はまだ無い。カタカナとひらがな、漢字。",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈 and flags 🇯🇵🇫🇷",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "x = {'a': [1, 2, 3]}  # comment\r\n\tindented\ttabs\n\n\n",
    " " * 300 + "\n" * 17 + "\t" * 9 + "  \n  \n",
    "Ünïcödé façade, naïve café; Ελληνικά; Русский текст; हिन्दी; 한국어 문장.",
    "User: what is 2+2?\n\nAssistant: 4\n\n",
    "<|image|> <|audio|> <|eos|> <|user|>",
    "",
]


@pytest.fixture(scope="module")
def reference():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(find_world_vocab()))


@pytest.fixture(scope="module", params=["rust", "python"])
def world(request):
    return WorldTokenizer(backend=request.param)


def test_world_ids_match_authors_tokenizer_on_multilingual_corpus(world, reference):
    for text in CORPUS:
        assert world.encode(text) == reference.encode(text), text
    joined = "\n".join(CORPUS) * 3
    assert world.encode(joined) == reference.encode(joined)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80))
def test_world_ids_match_authors_tokenizer_on_random_unicode(world, reference, text):
    ids = world.encode(text)
    assert ids == reference.encode(text)
    assert world.decode(ids) == text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80))
def test_world_encode_bytes_matches_authors_tokenizer_on_random_bytes(world, reference, data):
    ids = world.encode_bytes(data)
    assert ids == reference.encodeBytes(data)
    assert world.decode_bytes(ids) == data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["<|image|>", "<|audio|>", "<|eos|>", "\x00", "a", "你", "\n\n", "😀"]), max_size=20))
def test_world_user_text_never_encodes_to_reserved_ids(world, pieces):
    ids = world.encode("".join(pieces))
    assert not set(ids) & world.special.ids()
    assert all(1 <= i <= 65529 for i in ids)


def test_world_reserved_ids_are_outside_vocab_and_decode_to_markers(world):
    special = world.special
    assert min(special.ids() - {0}) == 65530 and max(special.ids()) <= 65535
    assert len(special.ids()) == 6
    assert world.decode([special.image, special.audio, special.eos]) == "<|image|><|audio|><|eos|>"
    assert world.vocab_size == 65536


def test_world_decode_rejects_ids_outside_vocab(world):
    with pytest.raises(TokenizerError, match="70000"):
        world.decode([70000])
    with pytest.raises(TokenizerError, match="-1"):
        world.decode_bytes([-1])


def test_world_decode_of_split_multibyte_character_is_replacement_not_crash(world):
    ids = world.encode_bytes("你".encode()[:2])
    assert world.decode(ids) == "\ufffd"


def test_world_encode_rejects_lone_surrogate(world):
    with pytest.raises(TokenizerError, match="UTF-8"):
        world.encode("a\ud800b")


def test_world_vocab_cache_round_trips_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = WorldTokenizer(backend="python")
    cached = list((tmp_path / "mmrwkv").glob("world-*.bin"))
    assert len(cached) == 1
    second = WorldTokenizer(backend="python")
    assert second.table == first.table == parse_world_vocab(find_world_vocab())


def test_world_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    WorldTokenizer(backend="python")
    (cache,) = (tmp_path / "mmrwkv").glob("world-*.bin")
    cache.write_bytes(cache.read_bytes()[:-10])
    assert WorldTokenizer(backend="python").table == parse_world_vocab(find_world_vocab())


def test_world_malformed_vocab_line_names_file_and_line(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 'a' 1\n2 'bc' 5\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.txt:2"):
        parse_world_vocab(bad)


def test_world_vocab_is_parsed_without_eval(tmp_path):
    evil = tmp_path / "vocab.txt"
    evil.write_text("1 __import__('os').getcwd() 1\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="malformed"):
        parse_world_vocab(evil)


def test_load_tokenizer_world_spec_and_vocab_path():
    assert isinstance(load_tokenizer("world"), WorldTokenizer)
    explicit = load_tokenizer(find_world_vocab())
    assert explicit.encode("hello world") == load_tokenizer().encode("hello world")


def test_load_tokenizer_unknown_spec_is_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="nope"):
        load_tokenizer(tmp_path / "nope")


def test_load_tokenizer_world_is_shared_per_vocab_file():
    assert load_tokenizer("world") is load_tokenizer("world")
    assert load_tokenizer(find_world_vocab()) is load_tokenizer("world")
