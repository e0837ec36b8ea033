"""Tokenizers against the authors' tools on inputs a reviewer tries first: the World tokenizer vs `TRIE_TOKENIZER`
on CRLF, NUL, ZWJ emoji, long runs and invalid UTF-8 bytes; a GPT-NeoX-20B-format `tokenizer.json` (byte-level BPE,
NFC, added whitespace tokens, `<|endoftext|>` = 0) vs what `rwkv.utils.PIPELINE` does with it
(`tokenizers.Tokenizer.from_file(..).encode(x).ids`), and `mmrwkv generate` of an RWKV-4 whose vocabulary that
file fills exactly (the Pile models: 50277 ids, 20B_tokenizer.json)."""

from __future__ import annotations

import pytest
import torch

from mmrwkv.cli import main
from mmrwkv.tokenizer import WorldTokenizer, find_world_vocab, load_tokenizer

from .conftest import make_official

TRICKY = [
    "a\r\nb\r\n\r\n",
    "\r" * 300,
    "\x00",
    "x\x00\x00y\x00",
    "👨\u200d👩\u200d👧\u200d👦 family 🏳️\u200d🌈 flag",
    "a" * 20000,
    " " * 3000,
    "\n" * 2000,
    "é" * 5000,
    "中文" * 2000,
    "e\u0301 and \ufeffBOM \u2028\u2029",
    "\U0010ffff\x7f\x80",
    "User: hi\n\nAssistant:",
    "<|endoftext|><|image|>",
]
INVALID = [b"\xff", b"\xc3", b"a\xc3(b", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", bytes(range(256))]


@pytest.fixture(scope="module")
def reference():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(find_world_vocab()))


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_world_ids_equal_the_authors_on_tricky_text(reference, backend):
    ours = WorldTokenizer(backend=backend)
    for text in TRICKY:
        ids = ours.encode(text)
        assert ids == reference.encode(text), repr(text[:20])
        assert ours.decode(ids) == text
        assert not set(ids) & (ours.special.ids() - {0}) and 0 not in ids


def test_world_ids_equal_the_authors_on_invalid_utf8_bytes(reference):
    ours = WorldTokenizer()
    for data in INVALID:
        ids = ours.encode_bytes(data)
        assert ids == reference.encodeBytes(data) and ours.decode_bytes(ids) == data


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    """A small tokenizer.json in the GPT-NeoX 20B layout: <|endoftext|> = 0, <|padding|> = 1, byte-level BPE with
    NFC, and added (non-special) whitespace-run tokens at the end."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["Hello world, the Pile.  Two  spaces.\n\ncafé naïve 中文 😀", "def f(x):\n    return x * 2\n"] * 40
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(" " * n, normalized=True) for n in (24, 8, 4, 2)])
    path = tmp_path_factory.mktemp("neox") / "20B_tokenizer.json"
    tok.save(str(path))
    return path


def test_neox_format_ids_and_text_equal_what_the_authors_pipeline_gets(neox):
    from tokenizers import Tokenizer

    authors = Tokenizer.from_file(str(neox))  # rwkv.utils.PIPELINE(model, "20B_tokenizer.json") encodes with this
    ours = load_tokenizer(neox)
    assert ours.special.eos == 0 and min(ours.special.ids() - {0}) >= authors.get_vocab_size()
    for text in [t for t in TRICKY if "<|" not in t] + ["a  b    c" + " " * 30 + "d", "    return x\n"]:
        ids = ours.encode(text)
        assert ids == authors.encode(text).ids, repr(text[:20])
        assert ours.decode(ids) == authors.decode(ids)
    # the one intended difference: text spelling a special token stays text (the authors' gets id 0)
    assert 0 not in ours.encode("<|endoftext|>") and authors.encode("<|endoftext|>").ids == [0]


def test_generate_with_a_tokenizer_that_fills_the_models_vocabulary(neox, tmp_path, capsys):
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(neox)).get_vocab_size()  # like 50277 for the Pile models
    path = tmp_path / "RWKV-4-Pile-test.pth"
    torch.save({k: v.bfloat16() for k, v in make_official("4", vocab=vocab, n_embd=64, n_layer=1).items()}, path)
    args = ["generate", "--checkpoint", str(path), "--tokenizer", str(neox), "--prompt", "Hello", "--max-tokens", "4"]
    assert main([*args, "--temperature", "0"]) == 0
    capsys.readouterr()
    small = tmp_path / "small.pth"
    torch.save(make_official("4", vocab=vocab - 1, n_embd=64, n_layer=1), small)
    assert main(["generate", "--checkpoint", str(small), "--tokenizer", str(neox), "--prompt", "Hello"]) == 2
    assert f"tokenizer has {vocab} text ids but {small} embeds only {vocab - 1}" in capsys.readouterr().err


def test_a_marker_the_file_has_as_an_ordinary_added_token_is_still_never_produced_by_text(neox, tmp_path):
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(neox))
    tok.add_tokens([AddedToken("<|user|>", special=False), AddedToken("<|image|>", special=False)])
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path / "tokenizer.json")
    assert ours.special.user == tok.token_to_id("<|user|>") and ours.special.image == tok.token_to_id("<|image|>")
    ids = ours.encode("hi <|user|> look <|image|> there")
    assert not set(ids) & ours.special.ids()
    assert ours.decode([ours.special.user]) == "<|user|>"
