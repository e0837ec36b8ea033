"""StreamSession: chunks advance one constant-size state; ask() answers from a copy and leaves the stream as it was;
feeding chunk by chunk equals prefilling the same tokens at once; the layout equals the chat template's."""

import pytest
import torch
from PIL import Image

from mmrwkv.data.template import ChatTemplate, Slot, Turn
from mmrwkv.errors import MediaError
from mmrwkv.inference.stream import StreamSession
from mmrwkv.multimodal import Media, MultimodalRWKV
from mmrwkv.rwkv.state import FIELDS

RATE = 8000


def states_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_ask_leaves_the_stream_state_bit_identical(stream_model, tone, frame):
    session = StreamSession(stream_model, marker=" {t:.0f}s")
    twin = StreamSession(stream_model, marker=" {t:.0f}s")
    for s in (session, twin):
        s.feed(audio=tone(2.5), sample_rate=RATE)
        s.feed(frame=frame(1), at=2.5)
    before = session.state.clone()
    answer = "".join(session.ask("how many sounds so far?"))
    assert isinstance(answer, str)
    assert states_equal(session.state, before)
    # the stream goes on exactly as one never asked
    for s in (session, twin):
        s.feed(audio=tone(1.0, 880.0), sample_rate=RATE)
    assert states_equal(session.state, twin.state)
    assert torch.equal(session.logits, twin.logits)


def test_feeding_chunks_equals_prefilling_the_same_tokens_at_once(stream_model, tone, frame):
    session = StreamSession(stream_model, window_s=0.5, frame_interval_s=1.0)
    waves = [tone(0.3, 300.0), tone(0.9, 600.0), tone(0.3, 900.0)]  # 1.5 s cut into three 0.5 s windows
    for w in waves:
        session.feed(audio=w, sample_rate=RATE)
    session.feed(frame=frame(2), at=1.5)
    session.feed(frame=frame(3), at=1.7)  # inside the frame interval: not encoded
    session.feed(frame=frame(4), at=2.6)
    assert session.items == {"audio": 3, "image": 2}

    whole = torch.cat([torch.as_tensor(w) for w in waves])
    encoder = stream_model.encoders["audio"]
    media, ids = Media(), stream_model.tokenizer.encode("User: ")
    for i in range(3):
        feats = encoder.features(whole[i * 4000 : (i + 1) * 4000].contiguous())
        media.add("audio", feats)
        ids += [stream_model.placeholder_ids["audio"]] * stream_model.tokens_per_item("audio", feats)
    for seed in (2, 4):
        pixels = stream_model.preprocess("image", Image.fromarray(frame(seed)))
        media.add("image", pixels)
        ids += [stream_model.placeholder_ids["image"]] * stream_model.tokens_per_item("image", pixels)
    assert session.tokens == len(ids)
    with torch.inference_mode():
        logits, state = stream_model(torch.tensor([ids]), media, last_only=True)
    for f in FIELDS:
        torch.testing.assert_close(getattr(session.state, f), getattr(state, f), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(session.logits, logits[0, -1], atol=1e-4, rtol=1e-4)


def test_stream_and_question_are_the_chat_templates_inline_layout(stream_model, tone):
    session = StreamSession(stream_model)
    items = [(tone(1.0, 400.0), RATE), (tone(1.0, 800.0), RATE)]
    for item in items:
        session.feed(audio=item)
    question = "how many sounds so far?"
    template = ChatTemplate(stream_model.tokenizer, "inline", model=stream_model)
    enc = template.encode_turns([Turn("user", [Slot("audio"), Slot("audio"), "\n" + question], audio=items)])
    with torch.inference_mode():
        _, expected = stream_model(torch.tensor([enc.ids]), enc.media, last_only=True)
    # the stream's state, then the question on a copy, reach the template's state after the whole prompt
    state = session.fork_state()
    q_ids = stream_model.tokenizer.encode("\n" + question + "\n\n") + stream_model.tokenizer.encode("Assistant:")
    with torch.inference_mode():
        _, state = stream_model.backbone(stream_model.backbone.embed(torch.tensor([q_ids])), state, last_only=True)
    assert session.tokens + len(q_ids) == len(enc.ids)
    for f in FIELDS:
        torch.testing.assert_close(getattr(state, f), getattr(expected, f), atol=1e-4, rtol=1e-4)


def test_state_bytes_stay_constant_over_a_long_stream(stream_model, tone, frame):
    session = StreamSession(stream_model, window_s=0.25)
    sizes = []
    for minute in range(40):
        session.feed(audio=tone(0.5, 200.0 + 10 * minute), sample_rate=RATE)
        session.feed(frame=frame(minute), at=minute * 0.5)
        sizes.append(session.state_bytes)
    assert len(set(sizes)) == 1 and sizes[0] == session.state.nbytes > 0
    assert session.items["audio"] == 80 and session.elapsed_s == pytest.approx(20.0)
    info = session.describe()
    assert info["state_bytes"] == sizes[0] and info["audio_windows"] == 80


def test_silence_and_int16_chunks_are_fed_and_bad_chunks_refused(stream_model, tone, frame):
    session = StreamSession(stream_model)
    assert session.feed(audio=torch.zeros(RATE), sample_rate=RATE) == 1  # digital silence is a stream too
    pcm = (tone(1.0) * 32767).astype("int16")
    assert session.feed(audio=(pcm, RATE)) == 1
    assert session.feed(audio=tone(1.0, rate=16000), sample_rate=16000) == 1  # resampled to the encoder's rate
    with pytest.raises(MediaError, match="NaN"):
        session.feed(audio=torch.full((100,), float("nan")))
    audio_only = MultimodalRWKV.from_config(
        {
            **stream_model.config,
            "encoders": {"audio": stream_model.config["encoders"]["audio"]},
            "backbone": {"size": "v7-tiny", "n_embd": 32, "vocab_size": 300},
        }
    )
    with pytest.raises(MediaError, match="no image encoder"):
        StreamSession(audio_only).feed(frame=frame(0))


TINY_WAV2VEC = {
    "extractor_mode": "layer_norm",
    "extractor_conv_layer_config": [[8, 10, 5], [8, 3, 2], [8, 2, 2]],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 16,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 8,
    "encoder_pos_conv_groups": 2,
    "encoder_num_layers": 1,
    "encoder_num_heads": 2,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 32,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": True,
    "encoder_layer_drop": 0.0,
    "aux_num_out": None,
}
# every registered encoder, at a tiny size where it has one; open_clip and torchvision run in the slow test
ENCODERS = {
    "tiny_whisper": ("audio", {"width": 16, "depth": 1, "heads": 2, "sample_rate": RATE}),
    "wav2vec2": ("audio", {"config": TINY_WAV2VEC, "sample_rate": RATE}),
    "hubert": ("audio", {"config": TINY_WAV2VEC, "sample_rate": RATE}),
    "tiny_cnn": ("image", {"image_size": 16, "width": 16, "grid": 2}),
    "tiny_vit": ("image", {"image_size": 16, "width": 16, "patch_size": 8, "depth": 1, "heads": 2}),
}
LARGE = {"open_clip": ("image", {"arch": "ViT-B-32"}), "torchvision": ("image", {"arch": "resnet18"})}


def run_encoder(stream_tokenizer, config_for, tone, frame, name, modality, kwargs):
    spec = {"name": name, "kwargs": kwargs}
    config = config_for(stream_tokenizer, **{modality: spec})
    model = MultimodalRWKV.from_config(config).eval()
    session = StreamSession(model)
    for i in range(3):
        if modality == "audio":
            assert session.feed(audio=tone(1.0, 300.0 + 100 * i), sample_rate=RATE) == 1
        else:
            assert session.feed(frame=frame(i), at=float(i)) == 1
    before = session.state.clone()
    pieces = list(session.ask("what was the last sound?"))
    assert all(isinstance(p, str) for p in pieces)
    assert states_equal(session.state, before)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_registered_encoder_feeds_a_stream(stream_tokenizer, config_for, tone, frame, name):
    modality, kwargs = ENCODERS[name]
    run_encoder(stream_tokenizer, config_for, tone, frame, name, modality, kwargs)


def test_the_encoder_lists_cover_the_registry():
    from mmrwkv.encoders import list_encoders

    covered = set(ENCODERS) | set(LARGE) | {"hf_vision"}  # hf_vision: below, from a tower saved in the test
    assert set(list_encoders()) - {n for n in list_encoders() if n.startswith("test_")} <= covered


def test_a_hf_vision_tower_feeds_a_stream(stream_tokenizer, config_for, tone, frame, tmp_path):
    transformers = pytest.importorskip("transformers")
    tower = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 16, "patch_size": 8}
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**tower)).save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16).save_pretrained(tmp_path)
    run_encoder(stream_tokenizer, config_for, tone, frame, "hf_vision", "image", {"path": str(tmp_path)})


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_encoders_feed_a_stream(stream_tokenizer, config_for, tone, frame, name):
    modality, kwargs = LARGE[name]
    run_encoder(stream_tokenizer, config_for, tone, frame, name, modality, kwargs)
