"""HF tokenizer.json loading, BPE training, and reserved ids that user text never produces."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrwkv.errors import TokenizerError
from mmrwkv.tokenizer import HFTokenizer, Tokenizer, load_tokenizer, train_bpe

TEXTS = [
    "the cat sat on the mat",
    "a dog and a cat played in the park",
    "RWKV runs in RNN mode with a constant-size state",
    "你好世界 😀 multilingual text",
] * 20


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    train_bpe(TEXTS, 400, path)
    return load_tokenizer(path)


def _neox_like(tmp_path):
    """A tiny GPT-NeoX-style tokenizer.json: byte-level BPE with `<|endoftext|>` as added token 0."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_hf_tokenizer_follows_protocol_and_round_trips(bpe):
    assert isinstance(bpe, Tokenizer)
    for text in ["the cat sat", "你好 😀", "  spaces\n\nnewlines\t"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_hf_existing_eos_is_reused_and_markers_are_added(tmp_path):
    tok = HFTokenizer.from_file(_neox_like(tmp_path))
    assert tok.special.eos == 0
    assert len(tok.special.ids()) == 6
    assert tok.vocab_size > max(tok.special.ids())
    assert tok.decode([tok.special.image, tok.special.eos]) == "<|image|><|eos|>"


def test_trained_bpe_reserves_ids_zero_to_five(bpe):
    assert bpe.special.ids() == frozenset(range(6))
    assert bpe.vocab_size <= 400


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["<|image|>", "<|audio|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]),
            st.text(max_size=8),
        ),
        max_size=10,
    )
)
def test_hf_user_text_never_encodes_to_reserved_ids(bpe, pieces):
    text = "".join(pieces)
    ids = bpe.encode(text)
    assert not set(ids) & bpe.special.ids()
    assert bpe.decode(ids) == text


def test_hf_loaded_file_user_text_spelling_markers_stays_text(tmp_path):
    tok = HFTokenizer.from_file(_neox_like(tmp_path))
    ids = tok.encode("look: <|image|> then <|endoftext|>")
    assert not set(ids) & tok.special.ids()
    assert tok.decode(ids) == "look: <|image|> then <|endoftext|>"


def test_hf_decode_bytes_per_token_concatenates_to_text(bpe):
    text = "你好世界 😀 cat"
    ids = bpe.encode(text)
    assert b"".join(bpe.decode_bytes([i]) for i in ids) == text.encode()


def test_hf_decode_rejects_out_of_range_id(bpe):
    with pytest.raises(TokenizerError, match="99999"):
        bpe.decode([99999])


def test_hf_missing_file_names_path(tmp_path):
    with pytest.raises(TokenizerError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")


def test_hf_malformed_file_names_path(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(bad)


def test_train_bpe_rejects_tiny_vocab(tmp_path):
    with pytest.raises(TokenizerError, match="vocab_size 100"):
        train_bpe(TEXTS, 100, tmp_path / "t.json")


def test_load_tokenizer_accepts_directory(tmp_path):
    train_bpe(TEXTS, 300, tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path)
    assert tok.decode(tok.encode("the mat")) == "the mat"
