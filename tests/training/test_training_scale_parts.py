"""The parts of the real-scale training path that need no training run: precision under autocast, override
types, over-long samples, the bounded media cache, length-grouped batches, task metrics, `mmrwkv eval`'s data
section, backend choice, global batch size, image resize modes, RGBA thumbnails, self-contained checkpoints."""

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrwkv.config import load_config
from mmrwkv.data.sample import Sample
from mmrwkv.data.template import Encoded
from mmrwkv.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_wkv_trains_under_half_precision_autocast(dtype):
    from mmrwkv.kernels import wkv6, wkv7

    torch.manual_seed(0)
    xs = [torch.randn(1, 20, 2, 8, requires_grad=True) for _ in range(6)]
    r, w, k, v, a, b = xs
    decay = -torch.nn.functional.softplus(w) - 0.5
    with torch.autocast("cpu", dtype=dtype):
        y7, _ = wkv7(r, decay, k, v, a, b, backend="chunked")
        y6, _ = wkv6(r, decay, k, v, torch.randn(2, 8), backend="chunked")
        (y7.float().sum() + y6.float().sum()).backward()
    ref7, _ = wkv7(r, decay, k, v, a, b, backend="reference")
    assert torch.allclose(y7.float(), ref7, rtol=1e-3, atol=1e-3) and all(x.grad is not None for x in xs)


def test_overrides_are_coerced_to_the_fields_type():
    cfg = load_config(ROOT / "recipes/easy_vqa.yaml", ["train.precision=32", "model.tokenizer=bpe"])
    assert cfg.train.precision == "32"


def _encoded(n_text: int, slots: int, media_first: bool = True) -> Encoded:
    media = [7] * slots
    text = list(range(100, 100 + n_text))
    ids = media + text if media_first else text + media
    return Encoded(ids=ids, labels=[-100 if i == 7 else i for i in ids])


def test_overlong_samples_are_truncated_skipped_or_refused_by_the_recipe_setting():
    from mmrwkv.training.lengths import fit_length

    cut, status = fit_length(_encoded(40, 10), 30, "truncate", {7}, "s1")
    assert status == "truncated" and len(cut.ids) == 30 and cut.ids[:10] == [7] * 10
    # media past the limit cannot be cut: the sample is skipped, never a crash
    assert fit_length(_encoded(40, 10, media_first=False), 30, "truncate", {7}, "s2") == (None, "skipped")
    assert fit_length(_encoded(40, 10), 30, "skip", {7}, "s3") == (None, "skipped")
    assert fit_length(_encoded(4, 10), 30, "truncate", {7}, "s4")[1] == ""
    with pytest.raises(DataError, match="sample s5: 50 tokens exceed data.max_text_tokens 30"):
        fit_length(_encoded(40, 10), 30, "error", {7}, "s5")


def test_collate_drops_skipped_samples_and_counts_them():
    from mmrwkv.tokenizer import load_tokenizer
    from mmrwkv.training.build import make_collate

    collate = make_collate(load_tokenizer("world"))
    batch = collate(
        [
            (_encoded(4, 2), {"overlong": ""}),
            (None, {"overlong": "skipped"}),
            (_encoded(4, 2), {"overlong": "truncated"}),
        ]
    )
    assert batch["input_ids"].shape[0] == 2 and batch["overlong"] == {"truncated": 1, "skipped": 1}
    assert collate([(None, {"overlong": "skipped"})])["input_ids"] is None


class _Preprocessor:
    def __init__(self):
        self.calls = 0

    def preprocess(self, modality, item):
        self.calls += 1
        return torch.zeros(1024)  # 4 KiB


def test_media_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    from mmrwkv.training.lengths import MediaCache

    model = _Preprocessor()
    cache = MediaCache(model, max_bytes=3 * 4096)
    for name in ["a", "b", "c", "a", "d", "a"]:
        cache.preprocess("image", f"/img/{name}.png")
    assert cache.bytes <= 3 * 4096 and len(cache) == 3
    assert model.calls == 4  # a hit twice; d pushed out b (least recently used), not a
    cache.preprocess("image", "/img/b.png")
    assert model.calls == 5
    off = MediaCache(model, max_bytes=0)
    off.preprocess("image", "/img/a.png")
    assert len(off) == 0


def test_length_grouped_batches_hold_similar_lengths_and_cover_every_sample():
    from mmrwkv.training.data import ResumableBatchSampler

    lengths = [i % 97 * 10 for i in range(400)]
    sampler = ResumableBatchSampler(400, 8, epochs=2, seed=3, lengths=lengths)
    batches = list(sampler)
    assert len(batches) == 100
    first = [i for b in batches[:50] for i in b]
    assert sorted(first) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = list(ResumableBatchSampler(400, 8, epochs=2, seed=3))
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 5
    # resumable: starting at batch 30 gives the same batches as the uninterrupted order
    assert list(ResumableBatchSampler(400, 8, epochs=2, seed=3, lengths=lengths, start=30)) == batches[30:]


def test_metrics_default_by_task_and_a_metric_that_does_not_apply_is_refused():
    from mmrwkv.evaluation.predict import task_metrics

    captions = [Sample(id="c", captions=["a cat"])]
    vqav2 = [Sample(id="q", question="what?", answers=["cat"] * 10)]
    short = [Sample(id="q", question="what?", answers=["cat"])]
    assert task_metrics([], captions) == ["cider", "bleu", "meteor", "rouge_l"]
    assert task_metrics([], vqav2) == ["vqa_accuracy"] and task_metrics([], short) == ["exact_match"]
    with pytest.raises(ConfigError, match="eval.metrics: 'cider' scores captions"):
        task_metrics(["cider"], short)
    with pytest.raises(ConfigError, match="eval.metrics: 'exact_match' scores answers"):
        task_metrics(["exact_match"], captions)


def test_eval_of_a_staged_recipe_reads_the_last_stages_data(tmp_path):
    from mmrwkv.evaluation.predict import evaluate_recipe

    cfg = load_config(ROOT / "recipes/llava_v7.yaml", [f"train.output_dir={tmp_path}"])
    # the last stage (vqav2) names VQAv2 files; the top-level llava section has no val paths at all
    with pytest.raises(DataError, match=r"data.paths.val.questions: .*v2_OpenEnded_mscoco_val2014_questions"):
        evaluate_recipe(cfg, tmp_path)


def test_progress_bar_shows_no_logger_version_and_no_max_epochs_line(tmp_path, caplog):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from mmrwkv.training.trainer import StepProgressBar, _NoAdverts

    bar = StepProgressBar()
    trainer = L.Trainer(
        logger=CSVLogger(str(tmp_path), name="", version="csv"),
        callbacks=[bar],
        enable_checkpointing=False,
        accelerator="cpu",
    )
    assert "v_num" not in bar.get_metrics(trainer, None)
    record = logging.LogRecord("x", logging.INFO, "", 0, "`Trainer.fit` stopped: `max_epochs=1` reached.", (), None)
    assert not _NoAdverts().filter(record)


def test_a_named_cuda_backend_that_cannot_run_is_an_error_and_the_choice_has_a_reason(monkeypatch):
    from mmrwkv.training.trainer import choose_wkv_backend

    monkeypatch.delenv("MMRWKV_WKV_BACKEND", raising=False)
    with pytest.raises(ConfigError, match="train.wkv_backend: 'cuda' was asked for by name and cannot run here"):
        choose_wkv_backend("cuda", on_gpu=False)
    assert choose_wkv_backend(None, on_gpu=False) == ("chunked", "no CUDA GPU: the chunk-parallel PyTorch op")
    monkeypatch.setenv("MMRWKV_WKV_BACKEND", "cuda")
    with pytest.raises(ConfigError, match="MMRWKV_WKV_BACKEND: 'cuda' was asked for"):
        choose_wkv_backend(None, on_gpu=False)


def test_global_batch_size_sets_accumulation_from_the_device_count():
    from mmrwkv.training.train import apply_global_batch

    cfg = load_config(
        ROOT / "recipes/easy_vqa.yaml",
        ["train.batch_size=4", "train.global_batch_size=32", "train.devices=2", "stages=[]"],
    )
    apply_global_batch(cfg)
    assert cfg.train.grad_accum == 4
    cfg = load_config(
        ROOT / "recipes/easy_vqa.yaml",
        ["train.batch_size=4", "train.global_batch_size=12", "train.devices=2", "stages=[]"],
    )
    with pytest.raises(ConfigError, match="train.global_batch_size: 12 is not a multiple"):
        apply_global_batch(cfg)


def test_fsdp_wraps_and_checkpoints_every_backbone_block(monkeypatch):
    from mmrwkv.rwkv.model import Block
    from mmrwkv.training.train import optim_settings
    from mmrwkv.training.trainer import build_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_config(ROOT / "recipes/llava_v7.yaml", ["train.grad_checkpoint=true"])
    strategy = build_strategy(cfg.train)
    assert Block in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert Block in strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
    # the strategy checkpoints the blocks: the module does not wrap them a second time
    assert not optim_settings(cfg, 10).grad_checkpoint


@pytest.mark.parametrize("mode", ["pad", "longest", "squash", "crop"])
def test_image_resize_modes_keep_or_drop_the_borders(mode):
    from mmrwkv.encoders import build

    encoder = build("tiny_cnn", image_size=16, width=8, grid=2, resize=mode)
    wide = Image.new("RGB", (64, 16), (255, 0, 0))
    x = encoder.preprocess(wide)  # (3, 16, 16), normalized
    red = encoder.preprocess(Image.new("RGB", (16, 16), (255, 0, 0)))[:, 8, 8]
    corner = x[:, 0, 0]
    if mode == "pad":  # the encoder's mean colour: zero after normalization
        assert corner.abs().max() < 0.05
    elif mode == "longest":  # black
        black = encoder.preprocess(Image.new("RGB", (16, 16), (0, 0, 0)))[:, 8, 8]
        assert torch.allclose(corner, black, atol=0.05)
    else:  # the image covers the whole input
        assert torch.allclose(corner, red, atol=0.05)
    with pytest.raises(ConfigError, match="resize 'fit'"):
        build("tiny_cnn", image_size=16, width=8, grid=2, resize="fit")


def test_rgba_thumbnails_are_composited_on_white(tmp_path):
    from mmrwkv.evaluation.report import _thumbnail

    image = tmp_path / "clip.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(image)
    _thumbnail(str(image), tmp_path / "thumb.png")
    with Image.open(tmp_path / "thumb.png") as thumb:
        assert thumb.convert("RGB").getpixel((5, 5)) == (255, 255, 255)


def test_a_trained_checkpoint_loads_without_the_encoders_original_weights_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from mmrwkv.multimodal import MultimodalRWKV

    weights = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, str(weights))
    config = {
        "backbone": {"size": "v7-tiny", "n_layer": 1, "n_embd": 32, "head_size": 16, "vocab_size": 65536},
        "tokenizer": "world",
        "projectors": {"image": {"kind": "linear"}},
        "encoders": {
            "image": {"name": "torchvision", "kwargs": {"arch": "resnet18", "image_size": 32, "weights": str(weights)}}
        },
    }
    model = MultimodalRWKV.from_config(config)
    model.save(tmp_path / "ckpt")
    weights.rename(tmp_path / "moved.safetensors")
    loaded = MultimodalRWKV.load(tmp_path / "ckpt")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_reports_carry_per_sample_scores_and_show_the_best_and_worst_examples(tmp_path):
    import json

    from mmrwkv.evaluation.report import write_report
    from mmrwkv.evaluation.score import score_samples

    samples = [Sample(id=f"c{i}", captions=[f"a red circle number {i}", "a red circle"]) for i in range(6)]
    predictions = {
        "c0": "a red circle",
        "c1": "a blue square",
        "c2": "a red circle number 2",
        "c3": "nothing",
        "c4": "red",
        "c5": "a red circle number 5",
    }
    result = score_samples(samples, predictions, ["cider", "bleu"], split="val", decoding="greedy", tokenizer="python")
    paths = write_report(tmp_path / "r", samples, predictions, result, title="t", num_examples=4, thumbnails=False)
    records = json.loads(paths["predictions"].read_text())
    assert all("CIDEr-D" in r["scores"] and "BLEU-4" in r["scores"] for r in records)
    report = paths["report"].read_text()
    assert "## Best examples (by CIDEr-D)" in report and "## Worst examples (by CIDEr-D)" in report
    best, worst = report.split("## Worst examples")
    assert "### c3" in worst and "### c3" not in best and "### c2" in best


def test_block_checkpointing_recomputes_blocks_with_the_same_gradients_and_keys():
    from mmrwkv.rwkv import RWKV, config_for
    from mmrwkv.training.module import checkpoint_blocks

    torch.manual_seed(0)
    model = RWKV(config_for("v7-tiny", n_layer=2, n_embd=32, head_size=16))
    ids = torch.randint(0, 256, (2, 12))
    keys = list(model.state_dict())

    def grads():
        saved = []
        model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            h, _ = model.forward_hidden(ids)
        h.square().mean().backward()
        return [torch.zeros(()) if p.grad is None else p.grad.clone() for p in model.parameters()], sum(saved)

    plain, kept_plain = grads()
    checkpoint_blocks(model)
    again, kept = grads()
    # the forward pass keeps only each block's inputs (the blocks run again in the backward pass)
    assert kept < kept_plain / 3
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, again, strict=True))
    assert list(model.state_dict()) == keys


def test_the_wandb_logger_runs_offline_or_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    from mmrwkv.training.trainer import build_loggers

    cfg = load_config(ROOT / "recipes/easy_vqa.yaml", ["train.loggers=[wandb]", "train.wandb_project=p", "stages=[]"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"train.loggers: 'wandb' needs the wandb package .*mmrwkv\[wandb\]"):
            build_loggers(cfg.train, tmp_path, None)
        return
    monkeypatch.setenv("WANDB_MODE", "offline")
    loggers = build_loggers(cfg.train, tmp_path, None)
    loggers[-1].log_metrics({"train/loss": 1.0}, step=1)
    loggers[-1].experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
