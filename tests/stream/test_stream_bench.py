"""`mmrwkv bench stream` at toy size: rows per simulated minute, a constant RWKV state, a growing KV cache, a PNG."""

import json

from mmrwkv.cli import main


def test_bench_stream_reports_both_sides_per_minute(tmp_path, capsys):
    out, report = tmp_path / "stream.png", tmp_path / "stream.json"
    args = [
        "bench",
        "stream",
        "--minutes",
        "0.1",
        "--minute-s",
        "2",
        "--chunk-s",
        "0.5",
        "--window-s",
        "0.5",
        "--n-embd",
        "32",
        "--n-layer",
        "1",
        "--head-size",
        "16",
        "--vocab-size",
        "300",
        "--out",
        str(out),
        "--json",
        str(report),
    ]
    assert main(args) == 0
    data = json.loads(report.read_text())
    rwkv, transformer = data["rows"]["rwkv"], data["rows"]["transformer"]
    assert len(rwkv) == len(transformer) == 3
    assert len({r["state_bytes"] for r in rwkv}) == 1
    # every minute adds the same number of stream tokens to the cache: 1x, 2x, 3x
    sizes = [r["state_bytes"] for r in transformer]
    assert sizes[1] == 2 * sizes[0] and sizes[2] == 3 * sizes[0]
    assert all(r["ms"] > 0 and r["rss_mb"] > 0 and 0 < r["rtf"] for r in rwkv + transformer)
    assert out.is_file() and out.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "flat within 10%" in text and "p10" in text and "transformer per-window time x" in text
