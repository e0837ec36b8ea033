"""World tokenizer load time and encode MB/s: ours (compiled and pure Python) vs the authors' TRIE_TOKENIZER.

Run as `python -m mmrwkv.bench.tokenizer` (or `mmrwkv bench tokenizer` once listed in BENCHMARKS). Every
implementation encodes the same multilingual text; the ids must be identical or the run fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

_SAMPLES = [
    "The quick brown fox jumps over the lazy dog; RWKV generates in RNN mode with a constant-size state.\n",
    "人工智能正在改变世界，我们需要负责任地发展它。吾輩は猫である。名前はまだ無い。",
    "مرحبا بالعالم، هذه جملة باللغة العربية. Ελληνικά, Русский текст, हिन्दी, 한국어 문장.",
    "Emoji 😀👍🏽👨‍👩‍👧‍👦 and code:\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\n",
    "    indented\t\ttabs   and   spaces" + " " * 40 + "\n",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--megabytes", type=float, default=2.0, help="size of the text to encode")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median counts")


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load_times(repeats: int) -> dict[str, float]:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from mmrwkv.tokenizer import WorldTokenizer, find_world_vocab

    path = str(find_world_vocab())
    times = {"authors' TRIE_TOKENIZER": _median_seconds(lambda: TRIE_TOKENIZER(path), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            times["ours, first load (parses, writes cache)"] = _median_seconds(WorldTokenizer, 1)
            times["ours (rust encoder)"] = _median_seconds(WorldTokenizer, repeats)
            times["ours (python encoder)"] = _median_seconds(
                lambda: WorldTokenizer(backend="python")._python(), repeats
            )
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = old
    return times


def run(args: argparse.Namespace) -> int:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from mmrwkv.tokenizer import WorldTokenizer, find_world_vocab

    print("load seconds (median):")
    for name, seconds in _load_times(args.repeats).items():
        print(f"  {name:42s} {seconds:7.3f}")
    text = "".join(_SAMPLES)
    text = text * max(1, int(args.megabytes * 1e6 / len(text.encode())))
    size = len(text.encode()) / 1e6
    encoders = {
        "authors' TRIE_TOKENIZER": TRIE_TOKENIZER(str(find_world_vocab())).encode,
        "ours (rust encoder)": WorldTokenizer(backend="rust").encode,
        "ours (python encoder)": WorldTokenizer(backend="python").encode,
    }
    expected = encoders["authors' TRIE_TOKENIZER"](text)
    print(f"encode {size:.2f} MB of multilingual text (median of {args.repeats}):")
    reference = None
    for name, encode in encoders.items():
        if encode(text) != expected:
            raise SystemExit(f"{name}: ids differ from the authors' tokenizer")
        rate = size / _median_seconds(lambda e=encode: e(text), args.repeats)
        reference = reference or rate
        print(f"  {name:42s} {rate:7.2f} MB/s  x{rate / reference:5.1f}")
    print("ids identical: yes")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
