"""`mmrwkv bench batch` at toy size: it times both batched steps and both generations, and checks its options."""

import json

import pytest
import torch

from mmrwkv.cli import main


def test_bench_batch_times_rows_and_batched_steps_side_by_side(tmp_path, capsys):
    out = tmp_path / "batch.json"
    threads = torch.get_num_threads()
    args = ["bench", "batch", "--size", "v7-tiny", "--batch-sizes", "2,3", "--dtypes", "bf16,fp32", "--tokens", "2",
            "--rounds", "1", "--threads", "1", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    assert torch.get_num_threads() == threads
    summary = json.loads(out.read_text())
    assert summary["size"] == "v7-tiny" and summary["threads"] == 1
    assert [(r["dtype"], r["batch"]) for r in summary["rows"]] == [
        ("bfloat16", 2), ("bfloat16", 3), ("float32", 2), ("float32", 3)
    ]  # fmt: skip
    for r in summary["rows"]:
        assert min(r["rows_ms"], r["batched_ms"], r["generate_batch_ms"], r["one_at_a_time_ms"]) > 0
        assert r["rows_vs_batched"] == pytest.approx(r["rows_ms"] / r["batched_ms"])
        assert r["batch_vs_one_at_a_time"] == pytest.approx(r["generate_batch_ms"] / r["one_at_a_time_ms"])
    assert "generate_batch" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags", [["--dtypes", "fp16"], ["--batch-sizes", "2,x"], ["--batch-sizes", "0"], ["--tokens", "0"]]
)
def test_bench_batch_refuses_bad_options_naming_them(flags):
    with pytest.raises(SystemExit, match="--batch-sizes|dtypes"):
        main(["bench", "batch", "--size", "v7-tiny", *flags])
