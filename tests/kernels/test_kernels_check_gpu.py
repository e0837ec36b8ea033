"""kernels/check_gpu.sh and its report (kernels/check_gpu.py): the dry run on CPU goes through the same code as a
GPU visit (accuracy table against the fp64 reference, timing table with errors against ours, JSON under the
output folder) on tiny shapes, with "chunked" standing in for the CUDA kernels and Triton interpreted."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mmrwkv.kernels import check_gpu

SCRIPT = Path(check_gpu.__file__).with_name("check_gpu.sh")


def test_dry_run_writes_the_accuracy_and_timing_tables(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all of our kernels within tolerance" in run.stdout and "all checks passed" in run.stdout
    report = json.loads((tmp_path / "check_gpu.json").read_text())
    assert report["environment"]["dry_run"] is True and report["failures"] == []
    rows = report["accuracy"]
    # every op, both dtypes, both lengths and the long strong-decay case for ours; Triton on wkv7 in fp32
    ours = {(r["op"], r["dtype"], r["T"]) for r in rows if r["backend"] == "ours"}
    assert len(ours) == 3 * 2 * 2 + 2
    triton = [r for r in rows if r["backend"].startswith("triton")]
    assert {(r["T"], r["strong"]) for r in triton} == {(37, False), (100, False), (200, True)}
    for row in rows:
        assert row["ok"], row
        # y, the final state and the gradient of every input, each with its absolute and relative error
        assert {"y", "state", "dstate"} <= set(row["errors"]) and row["worst_rel"] < row["tol"]
    timing = {r["backend"]: r for r in report["timing"]}
    assert timing["ours"]["fwd_bwd_ms"] > 0 and timing["triton-32"]["vs_ours_worst_rel"] < 1e-4
    assert "skipped" in timing["fla"] and "dry run" in report["ptxas"]
    assert (tmp_path / "report.txt").read_text().count("==== ") >= 5


def test_a_row_over_tolerance_an_error_or_a_spill_is_a_failure():
    report = {
        "accuracy": [
            {"backend": "ours", "op": "wkv7", "T": 37, "dtype": "bf16", "ok": False, "counts": True},
            {"backend": "fla", "op": "wkv7", "T": 37, "dtype": "bf16", "ok": False, "counts": False},
        ],
        "timing": [{"backend": "triton-32", "error": "RuntimeError: out of resources"}],
        "ptxas": [{"kernel": "wkv7_backward_kernel<bf16>", "spill_stores": 64}, {"kernel": "x", "spill_stores": 0}],
    }
    assert check_gpu.failures(report) == [
        "accuracy ours wkv7 T=37 bf16",
        "timing triton-32: RuntimeError: out of resources",
        "ptxas: wkv7_backward_kernel<bf16> spills 64 B",
    ]


def test_errors_are_relative_to_the_largest_reference_value_and_catch_non_finite_outputs():
    import torch

    want = {"y": torch.tensor([2.0, -4.0]), "state": torch.tensor([1.0])}
    got = {"y": torch.tensor([2.5, -4.0]), "state": torch.tensor([float("nan")])}
    errs = check_gpu.errors(got, want)
    assert errs["y"] == {"abs": 0.5, "rel": 0.125}
    assert errs["state"]["rel"] == float("inf")
