"""`mmrwkv bench decode` and `bench context` at toy sizes: they run, compare, and report what they claim."""

import json
import os

import pytest

from mmrwkv.bench.decode import ROWS, buffer_bytes, random_model, read_bandwidth, weight_bytes_per_token
from mmrwkv.cli import main


def test_bench_decode_runs_ours_and_the_package_side_by_side(tmp_path, capsys):
    out = tmp_path / "decode.json"
    code = main(
        ["bench", "decode", "--size", "v7-tiny", "--tokens", "2", "--rounds", "1", "--threads", "1", "--json", str(out)]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == set(ROWS)
    assert rows["rwkv package 0.8.32 (cpu fp32)"]["vs_package"] == 1.0
    assert all(r["tok_per_s"] > 0 and r["best_tok_per_s"] >= r["tok_per_s"] for r in rows.values())
    assert rows["ours (bf16)"]["weight_bytes_per_token"] * 2 == rows["ours (fp32)"]["weight_bytes_per_token"]
    assert "% bound" in capsys.readouterr().out
    assert summary["threads"] == 1
    assert summary["bandwidth_GBps"] == max(summary["readers_GBps"].values()) >= summary["median_bandwidth_GBps"]


def test_bench_decode_cpu_clock_needs_one_thread():
    with pytest.raises(SystemExit, match="--threads 1"):
        main(["bench", "decode", "--size", "v7-tiny", "--clock", "cpu", "--threads", "2"])


def test_bench_decode_picks_a_thread_count_and_restores_the_process_settings(tmp_path):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "decode.json"
    code = main(["bench", "decode", "--size", "v7-tiny", "--tokens", "2", "--rounds", "1", "--no-package",
                 "--no-bf16", "--json", str(out)])  # fmt: skip
    assert code == 0
    assert 1 <= json.loads(out.read_text())["threads"] <= (os.cpu_count() or 1)
    assert torch.get_num_threads() == threads


def test_weight_bytes_per_token_counts_one_embedding_row():
    model = random_model("v7-tiny")
    total = sum(p.numel() * 4 for p in model.parameters())
    V, C = model.emb.weight.shape
    assert weight_bytes_per_token(model) == total - V * C * 4 + C * 4
    readers = read_bandwidth(1 << 22, repeats=2)
    assert {"sum", "sgemv row-major", "sgemv column-major"} <= set(readers) and min(readers.values()) > 0
    assert buffer_bytes() >= 1 << 30


def test_bench_context_keeps_rwkv_state_constant_and_writes_plot(tmp_path):
    png, out = tmp_path / "ctx.png", tmp_path / "ctx.json"
    code = main(
        [
            "bench",
            "context",
            "--contexts",
            "8,40",
            "--n-embd",
            "32",
            "--n-layer",
            "1",
            "--head-size",
            "16",
            "--vocab-size",
            "64",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--out",
            str(png),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["rwkv_bytes"] == rows[1]["rwkv_bytes"]
    # the KV cache grows with the context: keys and values of every layer for every token
    assert rows[1]["transformer_bytes"] > rows[0]["transformer_bytes"] * 3


def test_decode_bound_uses_the_fastest_readers_median_pass():
    from mmrwkv.bench.decode import ReadBandwidth

    bandwidth = ReadBandwidth(1 << 20)
    names = list(bandwidth.readers)
    # two readers alternate lucky passes: each pass's fastest is always lucky, neither reader's median is
    bandwidth.passes = [{n: (9.0 if (i + j) % 2 else 5.0) for j, n in enumerate(names)} for i in range(4)]
    assert bandwidth.median_of_pass_best() == 9.0
    assert bandwidth.median() == 7.0
    bandwidth.passes[0][names[0]] = bandwidth.passes[2][names[0]] = 8.0  # reader 0: 8, 9, 8, 9 -> median 8.5
    assert bandwidth.median() == 8.5


def test_bench_context_fills_every_context_first_then_interleaves_the_timed_visits():
    from mmrwkv.bench.context import _measure

    log = []

    class Fake:
        def __init__(self, name):
            self.name, self.length = name, 0

        def grow_to(self, length):
            log.append(("grow", self.name, length))
            self.length = length

        def time_steps(self, n):
            log.append(("time", self.name, self.length))
            visit = sum(1 for e in log if e[0] == "time" and e[1:] == (self.name, self.length))
            # each visit: one slow (preempted) step and n - 1 steps at a cost that grows with the visit number
            return [0.5] + [1e-3 * visit] * (n - 1)

        def nbytes(self):
            return self.length

    rows = _measure({"rwkv": lambda: Fake("rwkv"), "transformer": lambda: Fake("transformer")}, [10, 20], 3, 3)
    grows, times = [e for e in log if e[0] == "grow"], [e for e in log if e[0] == "time"]
    assert log[: len(grows)] == grows and len(grows) == 4  # nothing timed before every context is filled
    # every round visits all four (model, context) pairs before the next round starts
    assert [t[1:] for t in times[:4]] == [t[1:] for t in times[4:8]] == [t[1:] for t in times[8:]]
    assert {t[1:] for t in times[:4]} == {("rwkv", 10), ("transformer", 10), ("rwkv", 20), ("transformer", 20)}
    # median over rounds of each visit's fastest step: visits' fastest are 1, 2, 3 ms
    assert rows[0]["rwkv_visit_ms"] == 2.0 and rows[1]["transformer_visit_ms"] == 2.0
    assert rows[0]["rwkv_min_ms"] == 1.0
    assert rows[0]["rwkv_ms"] == 3.0  # the median of all steps: pulled up by a preempted step per visit
