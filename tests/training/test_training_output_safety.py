"""Training never deletes or replaces what it did not write: `train.output_dir` must be absent, empty or a stage
directory, `--fresh` deletes only such a directory, and the final model is written aside and renamed into place."""

from types import SimpleNamespace

import pytest
import torch

from mmrwkv.config import load_config
from mmrwkv.errors import ConfigError
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training import train as train_module
from mmrwkv.training.train import train_stage

from .conftest import RECIPE


@pytest.mark.parametrize("fresh", [True, False])
def test_a_directory_of_other_files_is_refused_and_kept(tmp_path, tiny, fresh):
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "final").mkdir()
    cfg = load_config(RECIPE, tiny(tmp_path))
    with pytest.raises(ConfigError, match=rf"train.output_dir: {tmp_path} holds files .*thesis.tex"):
        train_stage(cfg, resume=True, fresh=fresh, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_final_directory_that_is_not_our_checkpoint_is_refused(tmp_path):
    from mmrwkv.training.train import check_stage_dir

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'final'}: exists and is not an mmrwkv checkpoint"):
        check_stage_dir(tmp_path)
    (tmp_path / "final" / "photo.jpg").unlink()
    check_stage_dir(tmp_path)


def test_a_stage_directory_and_its_leftovers_are_accepted(tmp_path):
    from mmrwkv.training.train import check_stage_dir

    for name in ("checkpoints", "logs", "eval-test", ".final.tmp-1a2b3c4d", ".tokenizer.json.123.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "curves.png").write_bytes(b"png")
    check_stage_dir(tmp_path)
    check_stage_dir(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_stage_dir(tmp_path / "file")


def test_a_failed_final_save_leaves_the_previous_final_whole(tmp_path, monkeypatch):
    backbone = {"size": "v7-tiny", "n_layer": 1, "n_embd": 32, "vocab_size": 64}
    module = SimpleNamespace(model=MultimodalRWKV.from_config({"backbone": backbone}), last_loss=1.5)
    final = train_module._save_final(module, tmp_path, "recipe: 1\n", steps=3)
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    assert train_module.read_summary(final) == {"steps": 3, "last_loss": 1.5}

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # the summary fails after the new weights were written: the old final model, summary and recipe stay together
    monkeypatch.setattr(train_module, "json", SimpleNamespace(dumps=boom))
    with torch.no_grad():
        module.model.backbone.emb.weight.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        train_module._save_final(module, tmp_path, "recipe: 2\n", steps=6)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert isinstance(MultimodalRWKV.load(final), MultimodalRWKV)


def test_the_recipes_own_report_directory_inside_the_stage_is_accepted(tmp_path, tiny):
    (tmp_path / "my-report").mkdir()
    (tmp_path / "my-report" / "report.md").write_text("# old report")
    cfg = load_config(RECIPE, tiny(tmp_path, **{"eval.report.dir": str(tmp_path / "my-report")}))
    train_module._prepare_output(tmp_path, cfg, resume=True, fresh=False)
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match=r"holds files a training stage does not write \(other\)"):
        train_module._prepare_output(tmp_path, cfg, resume=True, fresh=True)
    assert (tmp_path / "my-report" / "report.md").is_file()


def test_eval_and_run_refuse_a_report_directory_before_any_work(tmp_path, tiny):
    from mmrwkv.errors import CheckpointError
    from mmrwkv.evaluation.predict import evaluate_recipe
    from mmrwkv.training.train_and_evaluate import run_recipe

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.md").write_text("my report")
    cfg = load_config(RECIPE, tiny(tmp_path / "run"))
    # the checkpoint does not exist: the report directory is refused first, before any model is loaded
    with pytest.raises(CheckpointError, match=rf"{docs}: exists and is not an evaluation report directory"):
        evaluate_recipe(cfg, tmp_path / "no-model", out_dir=docs)
    cfg = load_config(RECIPE, tiny(tmp_path / "run", **{"eval.report.dir": str(docs)}))
    with pytest.raises(CheckpointError, match=rf"{docs}: exists and is not an evaluation report directory"):
        run_recipe(cfg, progress=False)
    assert not (tmp_path / "run").exists() and (docs / "report.md").read_text() == "my report"
