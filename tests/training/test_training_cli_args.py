"""`mmrwkv train / eval / run` argument parsing: overrides may come before or after the options."""

import pytest

from mmrwkv.cli import build_parser
from mmrwkv.commands.recipe import _eval_options


@pytest.mark.parametrize("rest", [["--checkpoint", "ck", "eval.max_samples=5", "--out", "o"],
                                  ["eval.max_samples=5", "--checkpoint", "ck", "--out", "o"]])
def test_eval_takes_overrides_on_either_side_of_its_options(rest):
    args = build_parser().parse_args(["eval", "recipes/easy_vqa.yaml", *rest])
    options = _eval_options(args.rest)
    assert (options.checkpoint, options.out, options.overrides) == ("ck", "o", ["eval.max_samples=5"])


def test_eval_without_checkpoint_is_an_error():
    args = build_parser().parse_args(["eval", "recipes/easy_vqa.yaml", "eval.max_samples=5"])
    with pytest.raises(SystemExit):
        _eval_options(args.rest)


def test_train_and_run_collect_overrides_and_flags():
    args = build_parser().parse_args(["train", "r.yaml", "train.lr.backbone=1e-3", "--resume"])
    assert args.overrides == ["train.lr.backbone=1e-3"] and args.resume and not args.fresh
    args = build_parser().parse_args(["run", "r.yaml", "--fresh"])
    assert args.fresh and args.overrides == []
