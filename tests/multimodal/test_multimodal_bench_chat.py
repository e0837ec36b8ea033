"""`mmrwkv bench chat` on toy sizes: the table, the baseline's growing history, the cache's savings."""

import argparse

from mmrwkv.bench import chat as bench_chat

TOY = dict(turns=3, layers=1, embd=32, head_size=16, image_size=16, grid=2, answer_tokens=2, repeats=1, seed=0)


def test_measure_reports_each_turn_and_the_cache_saving():
    r = bench_chat.measure(argparse.Namespace(**TOY))
    assert len(r["reuse"]) == len(r["rerun"]) == 3
    assert r["image_tokens"] == 4
    # the baseline's prompt holds the whole history, so it grows every turn
    assert r["history_tokens"][0] > r["image_tokens"] and sorted(set(r["history_tokens"])) == r["history_tokens"]
    cache = r["cache"]
    assert cache["encoder_calls"] == 1
    assert cache["prefill_tokens"][1] < cache["prefill_tokens"][0] - r["image_tokens"]


def test_run_prints_the_side_by_side_table(capsys):
    parser = argparse.ArgumentParser()
    bench_chat.add_arguments(parser)
    args = parser.parse_args(["--turns", "2", "--layers", "1", "--embd", "32", "--head-size", "16",
                              "--image-size", "16", "--grid", "2", "--answer-tokens", "1", "--repeats", "1"])
    assert bench_chat.run(args) == 0
    out = capsys.readouterr().out
    assert "state reuse ms" in out and "re-run history ms" in out
    assert "turn 2 / turn 1" in out and "prefill ratio" in out and "encoder calls per pair 1" in out
