"""Each window of a stream has a bag-of-words target of its own (what the window holds), and the bag-of-words loss
then pools each window's tokens alone instead of the whole row's media."""

import math
from pathlib import Path

import torch

from mmrwkv.config import load_config
from mmrwkv.data.sample import Sample
from mmrwkv.data.streams import load_streams, window_labels
from mmrwkv.training.build import build_datasets, build_model, media_bags, sample_meta
from mmrwkv.training.module import MultimodalLM
from mmrwkv.training.train import optim_settings

ROOT = Path(__file__).resolve().parents[2]


def test_window_labels_name_the_event_under_way_and_its_colour_in_that_frame():
    item = {"windows": 7, "events": [{"label": "red circle", "start": 1, "length": 2, "change": 1, "colour2": "blue"},
                                     {"label": "noise", "start": 4, "length": 1}]}  # fmt: skip
    assert window_labels(item) == ["nothing", "red circle", "blue circle", "nothing", "noise", "nothing", "nothing"]


def test_stream_samples_label_each_window_they_hold(tmp_path):
    ds = load_streams(tmp_path, "test", 4, windows=6, speech=False)
    for sample in ds:
        labels = sample.meta["item_labels"]
        assert len(labels) == len(sample.audio or sample.images) == sample.meta["at"]
        assert any(label != "nothing" for label in labels)  # a question comes after the first event began


class _Tok:
    def encode(self, text):
        return [ord(c) for c in text]


def test_media_bags_give_each_labelled_item_its_own_bag():
    a = Sample(id="a", audio=["s@0", "s@1"], question="q", answers=["two"], meta={"item_labels": ["nothing", "hum"]})
    b = Sample(id="b", audio=["s@0", "s@1", "s@2"], question="q", answers=["one"],
               meta={"item_labels": ["nothing", "hum", "ab"]})  # fmt: skip
    bags = media_bags([a, b], _Tok())
    assert bags[("s@1",)] == sorted({ord(c) for c in " hum"}) and bags[("s@2",)] == sorted({ord(c) for c in " ab"})
    assert bags[("s@0", "s@1")] == sorted({ord(c) for c in " two"})  # the row's bag is unchanged
    assert sample_meta(b, bags)["item_bow"] == [bags[("s@0",)], bags[("s@1",)], bags[("s@2",)]]
    assert "item_bow" not in sample_meta(Sample(id="c", images=["x.png"], question="q", answers=["x"]), bags)


def test_the_loss_is_each_windows_cross_entropy_against_its_own_bag(tmp_path):
    overrides = [f"data.root={tmp_path / 'data'}", "data.sizes.train=6", "data.sizes.test=2",
                 "data.generator.windows=5", "data.generator.speech=false", "data.generator.video_fraction=0.5",
                 f"train.output_dir={tmp_path / 'run'}"]  # fmt: skip
    cfg = load_config(ROOT / "recipes" / "stream_qa.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    train_set, _, collate = build_datasets(cfg, model)
    batch = collate([train_set[i] for i in range(8)])
    module = MultimodalLM(model, optim_settings(cfg, 10))
    assert all(len(m["item_bow"]) == len(m["images"]) + len(m["audio"]) for m in batch["meta"])
    module._loss(batch)
    lm, bow = module.last_parts
    # by hand: every window of every row, pooled alone, against its own bag
    ids, x = batch["input_ids"], model.embed(batch["input_ids"], batch["media"])
    skip = set(model.tokenizer.encode("\n\n"))
    per_modality = {}
    for modality, head in module.bow_heads.items():
        feats = x[ids == model.placeholder_ids[modality]]
        n = len(feats) // len(batch["media"].get(modality))
        bags = []
        for m in batch["meta"]:
            n_images = len(m["images"])
            bags += m["item_bow"][:n_images] if modality == "image" else m["item_bow"][n_images:]
        terms = []
        for i, bag in enumerate(bags):
            words = [t for t in bag if t not in skip]
            logp = torch.log_softmax(head(feats[i * n : (i + 1) * n].mean(0)), -1)
            terms.append(-logp[words].mean())
        per_modality[modality] = torch.stack(terms).mean()
    assert set(per_modality) == {"audio", "image"}
    assert math.isclose(float(bow.detach()), float(torch.stack(list(per_modality.values())).mean()), rel_tol=1e-5)
    bow.backward()
    for modality in ("audio", "image"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[modality].parameters())
