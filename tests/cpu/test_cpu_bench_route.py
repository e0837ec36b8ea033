"""The benchmarks' headers name the CPU and the native ISA route, and `bench decode --isa` times every variant side by
side."""

import json
import platform

import pytest

from mmrwkv.cli import main
from mmrwkv.kernels import cpu as native


def test_bench_wkv_header_names_the_cpu_and_the_route(capsys):
    code = main(["bench", "wkv", "--op", "wkv7", "--T", "32", "--C", "32", "--head-size", "16", "--rounds", "1",
                 "--ref-T", "16", "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert code == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith(f"CPU {native.cpu_model()}; ") and "torch kernels " in head
    if native.enabled():
        assert f"native {native.isa()} (CPU runs {', '.join(native.variants())})" in head


@pytest.mark.skipif(platform.system() != "Linux", reason="the native decode is built on Linux only")
def test_bench_decode_times_every_variant_side_by_side(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(native.ISA_VAR, raising=False)
    out = tmp_path / "decode.json"
    code = main(["bench", "decode", "--size", "v7-tiny", "--tokens", "1", "--rounds", "1", "--threads", "1",
                 "--no-package", "--isa", "all", "--json", str(out)])  # fmt: skip
    assert code == 0
    summary = json.loads(out.read_text())
    names = [r["name"] for r in summary["rows"]]
    others = [v for v in native.variants() if v != native.isa()]
    want = [f"ours, {v} plan ({d})" for d in ("fp32", "bf16") for v in others]
    assert set(want) <= set(names) and "ours (fp32)" in names
    assert all(r["tok_per_s"] > 0 for r in summary["rows"])
    assert summary["route"] == native.route() and capsys.readouterr().out.startswith(f"CPU {native.cpu_model()}; ")
    with pytest.raises(SystemExit, match="--isa sse9: this CPU runs"):
        main(["bench", "decode", "--size", "v7-tiny", "--no-package", "--threads", "1", "--isa", "sse9"])
