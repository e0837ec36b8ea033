"""`mmrwkv bench wkv` prints one row per backend and the chunked scaling ratio."""

import json

import pytest

from mmrwkv.cli import main
from mmrwkv.errors import ConfigError


def test_bench_wkv_prints_reference_and_chunked_rows(capsys, tmp_path):
    out_json = tmp_path / "wkv.json"
    args = ["bench", "wkv", "--op", "wkv6", "--T", "32", "--ref-T", "16", "--C", "16", "--head-size", "8",
            "--rounds", "1", "--scaling", "--json", str(out_json)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "chunked 4T" in out and "scaled linearly" in out
    assert "time(T=128) / time(T=32) = " in out and "cpu (linear = 4.00)" in out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["reference", "chunked", "chunked 4T"]
    assert rows[0]["T_timed"] == 16 and rows[0]["seconds_at_T"] == pytest.approx(2 * rows[0]["seconds"])


def test_bench_wkv_rejects_channels_not_divisible_by_head_size():
    from argparse import Namespace

    from mmrwkv.bench import wkv

    parser_args = Namespace(threads=None, device="cpu", C=100, head_size=64)
    with pytest.raises(ConfigError, match="--C 100 is not a multiple of --head-size 64"):
        wkv.run(parser_args)
