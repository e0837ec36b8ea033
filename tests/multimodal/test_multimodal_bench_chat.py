"""`mmrwkv bench chat` on toy sizes: the table, the baseline's growing history, the cache's savings."""

import argparse

from mmrwkv.bench import chat as bench_chat


def test_bench_reports_each_turn_and_the_cache_saving(capsys, small_tokenizer):
    parser = argparse.ArgumentParser()
    bench_chat.add_arguments(parser)
    args = parser.parse_args(["--turns", "3", "--layers", "1", "--embd", "32", "--head-size", "16",
                              "--image-size", "16", "--grid", "2", "--answer-tokens", "2", "--repeats", "1",
                              "--tokenizer", small_tokenizer])
    r = bench_chat.measure(args)
    assert len(r["reuse"]) == len(r["rerun"]) == 3 and all(len(t) == 2 for t in r["reuse"])
    assert r["image_tokens"] == 4
    # state reuse: turn 1 prefills the image prompt, later turns only their own new tokens
    assert r["reuse_tokens"][0] == r["history_tokens"][0]
    assert all(n < r["history_tokens"][t] - r["image_tokens"] for t, n in enumerate(r["reuse_tokens"]) if t)
    # the baseline's prompt holds the whole history, so it grows every turn
    assert r["history_tokens"][0] > r["image_tokens"] and sorted(set(r["history_tokens"])) == r["history_tokens"]
    cache = r["cache"]
    assert cache["encoder_calls"] == 1
    # the first question prefills its whole prompt, the second only what follows the cached image
    assert cache["prefill_tokens"][0] == cache["prompt_tokens"][0]
    assert cache["prefill_tokens"][1] < cache["prompt_tokens"][1] - r["image_tokens"]
    # the same second question again comes whole from the cache
    assert cache["prefill_tokens"][2] == 0 and cache["prompt_tokens"][2] == cache["prompt_tokens"][1]
    bench_chat._print_turns(r)
    bench_chat._print_cache(cache)
    out = capsys.readouterr().out
    assert "state reuse ms" in out and "re-run history ms" in out
    assert "turn 3 / turn 1 (cpu)" in out and "prefill ratio" in out and "encoder calls per three questions 1" in out
