"""Generation checked against the authors' chat tool (`rwkv.utils.PIPELINE`, rwkv==0.8.32): the same penalties with
decay (whitespace/digit tokens count 0 but keep the presence penalty), the same top-p/temperature order; and the
streaming promises: no broken UTF-8 mid-character, stop strings split across tokens, seeds, batched == single."""

from __future__ import annotations

import torch
from torch import nn

from mmrwkv.inference.generate import GenerationResult, Sampler, SamplingConfig, generate, generate_batch
from mmrwkv.tokenizer import load_tokenizer

from .conftest import make_random_model

V = 65536


def _logits_for(base: torch.Tensor, last: int) -> torch.Tensor:
    """Next-token logits that depend on the last token (so penalties change the path)."""
    return base + 0.5 * torch.roll(base, shifts=last % 97)


class _Fixed(nn.Module):
    """A stand-in language model for our generator: logits from `_logits_for`, no real state."""

    def __init__(self, base: torch.Tensor):
        super().__init__()
        self.base = base
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, state=None, last_only=False):
        rows = [_logits_for(self.base, int(i)) for i in ids[:, -1]]
        return torch.stack(rows)[:, None], state


class _FixedForPipeline:
    """The same stand-in for the authors' PIPELINE (forward(tokens list, state) -> (logits (V,), state))."""

    def __init__(self, base: torch.Tensor):
        self.base = base

    def forward(self, tokens, state):
        return _logits_for(self.base, tokens[-1]).clone(), state


def _base(tokenizer, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(V, generator=gen) * 0.5
    base[0] = -1e9  # never end-of-text (the authors' tool has no eos without token_stop)
    # spaces, digits and a few letters close together at the top, so the penalty rules decide the path
    for rank, text in enumerate([" ", "1", "a", "b", "\t", "c", "2", "d", " 1", "e"]):
        ids = tokenizer.encode(text)
        assert len(ids) == 1
        base[ids[0]] = 8.0 - 0.15 * rank
    return base


def _authors(base, prompt: str, n: int, presence: float, frequency: float, decay: float) -> str:
    from rwkv.utils import PIPELINE, PIPELINE_ARGS

    pipeline = PIPELINE(_FixedForPipeline(base), "rwkv_vocab_v20230424")
    args = PIPELINE_ARGS(temperature=0, top_p=0, alpha_presence=presence, alpha_frequency=frequency, alpha_decay=decay)
    return pipeline.generate(prompt, token_count=n, args=args)


def test_penalties_with_decay_follow_the_authors_pipeline_token_for_token():
    tokenizer = load_tokenizer("world")
    for seed, (presence, frequency, decay) in enumerate([(0.3, 0.3, 0.996), (0.0, 0.5, 0.9), (1.0, 0.0, 0.5)]):
        base = _base(tokenizer, seed)
        want = _authors(base, "Q:", 40, presence, frequency, decay)
        cfg = SamplingConfig(
            temperature=0,
            presence_penalty=presence,
            frequency_penalty=frequency,
            penalty_decay=decay,
            max_tokens=40,
            eos_ids=[],
        )
        got = "".join(generate(_Fixed(base), tokenizer, "Q:", cfg))
        assert got == want, (seed, got, want)


def test_whitespace_and_digit_tokens_get_presence_but_no_frequency_count():
    tokenizer = load_tokenizer("world")
    space, digits, letter = tokenizer.encode(" ")[0], tokenizer.encode("12")[0], tokenizer.encode("a")[0]
    cfg = SamplingConfig(temperature=0, presence_penalty=1.0, frequency_penalty=0.5, penalty_decay=1.0)

    def after_history():
        sampler = Sampler(cfg, 1, V, tokenizer=tokenizer)
        for token in (space, digits, letter):
            logits = torch.full((1, V), -10.0)
            logits[0, token] = 10.0
            assert sampler(logits).item() == token
        return sampler

    assert after_history().counts[0, [space, digits, letter]].tolist() == [0.0, 0.0, 1.0]

    def pick(values: dict[int, float]) -> int:
        logits = torch.zeros(1, V)
        for token, value in values.items():
            logits[0, token] = value
        return after_history()(logits).item()

    # space 3.0 - 1.0 (presence only) = 2.0 beats the letter 3.4 - 1.5 = 1.9 and an unseen 1.95
    assert pick({space: 3.0, letter: 3.4, 5: 1.95}) == space
    # ... and the presence penalty does apply to spaces and digits: 3.0 - 1.0 < 2.5
    assert pick({space: 3.0, digits: 3.0, 5: 2.5}) == 5


def test_top_p_is_chosen_at_temperature_one_then_the_temperature_reshapes_the_kept_tokens():
    # probs 0.55/0.25/0.20: top_p 0.5 keeps only the first at temperature 1; had the temperature (10) been
    # applied first, the flattened distribution would have kept two tokens
    logits = torch.tensor([0.55, 0.25, 0.20]).log().repeat(500, 1)
    tokens = Sampler(SamplingConfig(temperature=10.0, top_p=0.5, seed=3), 500, 3)(logits)
    assert set(tokens.tolist()) == {0}
    # and kept tokens are drawn with probs ** (1 / T): 0.5/0.3/0.2 with T=0.5 -> 25:9:4
    logits = torch.tensor([0.5, 0.3, 0.2]).log().repeat(20000, 1)
    tokens = Sampler(SamplingConfig(temperature=0.5, seed=4), 20000, 3)(logits)
    freq = torch.bincount(tokens, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([25.0, 9.0, 4.0]) / 38, atol=0.015)


class _Script(nn.Module):
    """Emits a fixed token script greedily (position = number of tokens seen so far, kept in the state)."""

    def __init__(self, script: list[int], vocab: int):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, state=None, last_only=False):
        pos = (0 if state is None else state) + ids.shape[1]
        logits = torch.zeros(ids.shape[0], 1, self.vocab)
        logits[:, 0, self.script[min(pos, len(self.script)) - 1]] = 1.0
        return logits, pos


def _bytes_tokenizer():
    class Bytes:
        vocab_size = 257
        special = type("S", (), {"eos": 256})()

        def encode(self, text):
            return list(text.encode())

        def decode_bytes(self, ids):
            return bytes(ids)

        def decode(self, ids):
            return bytes(ids).decode("utf-8", "replace")

    return Bytes()


def test_stream_never_splits_a_character_and_stops_inside_a_token_piece():
    tok = _bytes_tokenizer()
    text = "héllo 👨‍👩‍👧 wörld STOP after"
    script = list(text.encode())  # the i-th generated token is script[i] (one prompt byte)
    pieces = list(generate(_Script(script, 257), tok, "x", SamplingConfig(temperature=0, stop=["STOP"])))
    assert "".join(pieces) == "héllo 👨‍👩‍👧 wörld "
    for piece in pieces:
        piece.encode("utf-8")  # whole characters only: no surrogates or replacement characters
        assert "\ufffd" not in piece
    result = GenerationResult()
    pieces = list(generate(_Script(script, 257), tok, "x", SamplingConfig(temperature=0, max_tokens=2), result=result))
    # 'h' and the first byte of 'é': the held-back half character is flushed as one U+FFFD at the end
    assert "".join(pieces) == "h\ufffd" and result.finish_reason == "length" and len(result.tokens) == 2


def test_seed_reproduces_a_sampled_generation_and_batched_greedy_equals_single():
    tokenizer = load_tokenizer("world")
    base = _base(tokenizer, 5)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, seed=11, max_tokens=20, eos_ids=[])
    a = "".join(generate(_Fixed(base), tokenizer, "Hi", cfg))
    b = "".join(generate(_Fixed(base), tokenizer, "Hi", cfg))
    assert a == b
    greedy = SamplingConfig(temperature=0, max_tokens=12, eos_ids=[], presence_penalty=0.4, frequency_penalty=0.4)
    prompts = ["a", "a much longer prompt of several tokens", "1 2"]
    torch.set_num_threads(1)
    model = make_random_model("7", vocab_size=V)
    batched = generate_batch(model, tokenizer, prompts, greedy)
    for prompt, result in zip(prompts, batched, strict=True):
        single = GenerationResult()
        assert result.text == "".join(generate(model, tokenizer, prompt, greedy, result=single))
        assert result.tokens == single.tokens and len(set(single.tokens)) > 1


def test_cli_generate_refuses_an_empty_prompt_and_undecodable_argument_bytes(tmp_path, capsys):
    from mmrwkv.cli import main

    from .conftest import make_official

    path = tmp_path / "m.pth"
    torch.save(make_official("7", vocab=V, n_embd=64, head_size=32, n_layer=1), path)
    base = ["generate", "--checkpoint", str(path), "--max-tokens", "2", "--prompt"]
    assert main([*base, ""]) == 2
    assert "--prompt: empty" in capsys.readouterr().err
    assert main([*base, "ab\udcffcd"]) == 2  # how Python hands over an argument byte 0xff
    assert "--prompt: text is not encodable as UTF-8 at position 2" in capsys.readouterr().err
    assert main([*base, "ab"]) == 0
