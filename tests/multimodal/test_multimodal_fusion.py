"""MultimodalRWKV: placeholder slots filled by masked_scatter, count checks, gradients, save/load."""

import json

import pytest
import torch

from mmrwkv.data.template import ChatTemplate, Turn, collate
from mmrwkv.errors import CheckpointError, ConfigError, MediaError
from mmrwkv.multimodal import Media, MultimodalRWKV


def encode(model, text, images=(), audio=(), placement="first"):
    enc = ChatTemplate(model.tokenizer, placement, model=model).encode_turns(
        [Turn("user", text, list(images), list(audio))]
    )
    return torch.tensor([enc.ids]), enc.media


def test_features_land_in_their_slots_and_text_rows_stay_raw_embeddings(tiny_model, png, wav):
    ids, media = encode(tiny_model, "What?", images=[png(1), png(2)], audio=[wav(0.2)])
    x = tiny_model.embed(ids, media)
    raw = tiny_model.backbone.embed(ids)
    img_mask = ids[0] == tiny_model.tokenizer.special.image
    aud_mask = ids[0] == tiny_model.tokenizer.special.audio
    text = ~(img_mask | aud_mask)
    assert torch.equal(x[0, text], raw[0, text])
    images = tiny_model.encode_media("image", media.get("image"))
    audio = tiny_model.encode_media("audio", media.get("audio"))
    assert images.shape == (2 * 4, 32) and audio.shape == (20, 32)
    assert torch.allclose(x[0, img_mask], images) and torch.allclose(x[0, aud_mask], audio)


def test_forward_applies_ln0_to_the_fused_stream(tiny_model, png, wav):
    ids, media = encode(tiny_model, "Hi", images=[png(3)])
    logits, _ = tiny_model(ids, media)
    expected, _ = tiny_model.backbone(tiny_model.embed(ids, media))
    assert torch.allclose(logits, expected)
    # the embedding table is the raw one: ln0 is not folded into it
    assert not torch.allclose(
        tiny_model.backbone.blocks[0].ln0(tiny_model.backbone.emb.weight[:4]), tiny_model.backbone.emb.weight[:4]
    )


def test_slot_feature_mismatch_names_modality_and_both_counts(tiny_model, png, wav):
    ids, media = encode(tiny_model, "Hi", images=[png(1)])
    extra = Media.cat([media, media])
    with pytest.raises(MediaError, match=r"image: the ids hold 4 placeholder slots but the 2 image item\(s\) give 8"):
        tiny_model.embed(ids, extra)
    with pytest.raises(MediaError, match=r"image: the ids hold 4 placeholder slots but the 0 image"):
        tiny_model.embed(ids, None)
    text_ids, _ = encode(tiny_model, "no media")
    with pytest.raises(MediaError, match=r"audio: the ids hold 0 placeholder slots"):
        tiny_model.embed(text_ids, Media({"audio": [tiny_model.preprocess("audio", wav(0.1))]}))


def test_placeholders_of_a_modality_without_encoder_are_refused(tiny_model, config, small_tokenizer):
    image_only = MultimodalRWKV.from_config(config(audio=False, tokenizer=small_tokenizer))
    text = tiny_model.tokenizer.encode("hi there")
    ids = torch.tensor([[*text, tiny_model.tokenizer.special.audio]])
    with pytest.raises(MediaError, match="audio: 1 placeholder slots and 0 items given, but this model has no audio"):
        image_only.embed(ids)
    assert image_only.embed(torch.tensor([text])).shape == (1, len(text), 32)


def test_batched_embed_equals_one_sample_at_a_time(tiny_model, png, wav):
    template = ChatTemplate(tiny_model.tokenizer, "first", model=tiny_model)
    a = template.encode_turns([Turn("user", "first one", [png(1)], [wav(0.1)])])
    b = template.encode_turns([Turn("user", "second, longer question", [png(2)], [wav(0.3)])])
    batch = collate([a, b])
    x = tiny_model.embed(batch["input_ids"], batch["media"])
    for row, enc in enumerate((a, b)):
        alone = tiny_model.embed(torch.tensor([enc.ids]), enc.media)
        assert torch.allclose(x[row, : len(enc.ids)], alone[0], atol=1e-6)


def test_gradients_reach_projector_and_encoder_only_when_trainable(tiny_model, png, wav):
    ids, media = encode(tiny_model, "Hi", images=[png(1)])
    tiny_model.encoders["image"].requires_grad_(False)
    tiny_model(ids, media)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.projectors["image"].parameters())
    assert all(p.grad is None for p in tiny_model.encoders["image"].parameters())
    tiny_model.encoders["image"].requires_grad_(True)
    tiny_model(ids, media)[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.encoders["image"].parameters())


def test_save_load_roundtrip_gives_identical_logits(tiny_model, tmp_path, png, wav):
    ids, media = encode(tiny_model, "Hi", images=[png(1)], audio=[wav(0.2)])
    target = tiny_model.save(tmp_path / "ckpt")
    config = json.loads((target / "config.json").read_text())
    assert config["format"] == "mmrwkv" and config["kind"] == "multimodal"
    assert config["backbone"]["n_embd"] == 32 and config["encoders"]["image"]["name"] == "tiny_cnn"
    assert config["placement"] == "first"
    loaded = MultimodalRWKV.load(target).eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids, media)[0], tiny_model(ids, media)[0])
    # saving again over the same directory replaces it and leaves no temp directory behind
    tiny_model.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_load_errors_name_the_file(tmp_path, tiny_model, png, wav):
    with pytest.raises(CheckpointError, match="missing: no such checkpoint directory"):
        MultimodalRWKV.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        MultimodalRWKV.load(tmp_path / "empty")
    target = tiny_model.save(tmp_path / "ckpt")
    (target / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MultimodalRWKV.load(target)
    (target / "config.json").write_text(json.dumps({"format": "mmrwkv", "kind": "rwkv"}))
    with pytest.raises(CheckpointError, match="not a multimodal"):
        MultimodalRWKV.load(target)


def test_from_config_rejects_unknown_keys_and_modalities(config):
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        MultimodalRWKV.from_config({**config(), "colour": 1})
    bad = config(audio=False)
    bad["encoders"]["video"] = bad["encoders"]["image"]
    with pytest.raises(ConfigError, match="encoders.video"):
        MultimodalRWKV.from_config(bad)
