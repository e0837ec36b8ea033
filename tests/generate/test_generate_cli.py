"""`mmrwkv generate`: streams the same text as the library, flushes per piece, finds the tokenizer."""

import io

import pytest
import torch

from mmrwkv.cli import main
from mmrwkv.commands.generate import stream_to, tokenizer_spec
from mmrwkv.errors import TokenizerError
from mmrwkv.inference.generate import SamplingConfig, generate
from mmrwkv.tokenizer import train_bpe

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"] * 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mmrwkv.checkpoint import save_rwkv
    from mmrwkv.rwkv import RWKV, config_for

    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    staging = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer = train_bpe(TEXTS, 300, staging)
    torch.manual_seed(3)
    model = RWKV(config_for("v7-tiny", vocab_size=tokenizer.vocab_size)).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    save_rwkv(model, directory)
    (directory / "tokenizer.json").write_bytes(staging.read_bytes())
    return directory, model, tokenizer


def test_cli_generate_prints_the_library_greedy_text(checkpoint, capsys):
    directory, model, tokenizer = checkpoint
    sampling = SamplingConfig(temperature=0, max_tokens=10, stop=["zz"])
    expected = "".join(generate(model, tokenizer, "the cat", sampling))
    code = main(
        [
            "generate",
            "--checkpoint",
            str(directory),
            "--prompt",
            "the cat",
            "--temperature",
            "0",
            "--max-tokens",
            "10",
            "--stop",
            "zz",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == expected + "\n"
    assert expected


def test_cli_generate_missing_checkpoint_is_clear_error(tmp_path, capsys):
    code = main(["generate", "--checkpoint", str(tmp_path / "nope"), "--prompt", "x"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_stream_to_flushes_every_piece():
    class Recorder(io.StringIO):
        flushed: list[str] = []

        def flush(self):
            self.flushed.append(self.getvalue())

    out = Recorder()
    stream_to(iter(["a", "bc", "d"]), out)
    assert out.flushed[:3] == ["a", "abc", "abcd"]


def test_tokenizer_spec_prefers_flag_then_checkpoint_then_world(checkpoint, tmp_path):
    directory, _, _ = checkpoint
    assert tokenizer_spec(directory, "world", 300) == "world"
    assert tokenizer_spec(directory, None, 300) == str(directory / "tokenizer.json")
    assert tokenizer_spec(tmp_path / "model.pth", None, 65536) == "world"
    with pytest.raises(TokenizerError, match="--tokenizer"):
        tokenizer_spec(tmp_path / "model.pth", None, 50277)
