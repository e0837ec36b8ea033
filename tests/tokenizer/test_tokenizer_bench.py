"""The tokenizer benchmark runs, checks ids against the authors' tokenizer and reports every implementation."""

import argparse

from mmrwkv.bench import tokenizer as bench


def test_tokenizer_bench_reports_all_implementations(capsys):
    assert bench.run(argparse.Namespace(megabytes=0.01, repeats=1)) == 0
    out = capsys.readouterr().out
    assert "ids identical: yes" in out
    for name in ("authors' TRIE_TOKENIZER", "ours (rust encoder)", "ours (python encoder)", "first load"):
        assert name in out
