"""Chat template: the World convention, media placement, labels, typed markers, collate."""

import pytest
import torch

from mmrwkv.data.template import ChatTemplate, Encoded, Slot, Turn, collate, parse_markers
from mmrwkv.errors import DataError, MediaError
from mmrwkv.multimodal import Media
from mmrwkv.names import IGNORE
from mmrwkv.tokenizer import load_tokenizer

TOK = load_tokenizer("world")
IMG, AUD = TOK.special.image, TOK.special.audio


class SizedMedia:
    """Stands in for the model's media side: an item is an int n and fills n slots."""

    def preprocess(self, modality, item):
        return torch.full((item,), float(item))

    def tokens_per_item(self, modality, tensor):
        return tensor.numel()


def render(ids):
    """Decoded text with each run of placeholders shown as [image xN] / [audio xN]."""
    out, i = "", 0
    while i < len(ids):
        if ids[i] in (IMG, AUD):
            j = i
            while j < len(ids) and ids[j] == ids[i]:
                j += 1
            out += f"[{'image' if ids[i] == IMG else 'audio'} x{j - i}]"
            i = j
        else:
            j = i
            while j < len(ids) and ids[j] not in (IMG, AUD):
                j += 1
            out += TOK.decode(ids[i:j])
            i = j
    return out


def template(placement="inline"):
    return ChatTemplate(TOK, placement, model=SizedMedia())


def test_world_convention_with_system_and_blank_lines_collapsed():
    turns = [Turn("system", "Be brief."), Turn("user", "Hi\n\n\nthere"), Turn("assistant", "Hello.\n\nBye"),
             Turn("user", "Again")]
    enc = template().encode_turns(turns)
    assert render(enc.ids) == ("System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.\nBye\n\n"
                               "User: Again\n\nAssistant:")


def test_labels_cover_only_the_assistant_reply_and_its_end_of_turn():
    turns = [Turn("user", "Q1"), Turn("assistant", "A1"), Turn("user", "Q2"), Turn("assistant", "A2")]
    enc = template().encode_turns(turns, train=True)
    assert len(enc.labels) == len(enc.ids)
    supervised = [t for t, lab in zip(enc.ids, enc.labels, strict=True) if lab != IGNORE]
    assert TOK.decode(supervised) == " A1\n\n A2\n\n"
    assert all(lab in (IGNORE, t) for t, lab in zip(enc.ids, enc.labels, strict=True))
    assert render(enc.ids).endswith("Assistant: A2\n\n")


def test_generation_prompt_only_without_train():
    turns = [Turn("user", "Q")]
    assert render(template().encode_turns(turns).ids) == "User: Q\n\nAssistant:"
    assert render(template().encode_turns(turns, train=True).ids) == "User: Q\n\n"


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        ("first", "User: [image x5][audio x4]\nWhat is this?\n\nAssistant:"),
        ("sandwich", "User: What is this?\n[image x5][audio x4]\nWhat is this?\n\nAssistant:"),
        ("inline", "User: [image x5][audio x4]\nWhat is this?\n\nAssistant:"),
        ("last", "User: What is this?\n[image x5][audio x4]\n\nAssistant:"),
    ],
)
def test_placement_of_several_media_items(placement, expected):
    turn = Turn("user", "What is this?", images=[2, 3], audio=[4])
    enc = template(placement).encode_turns([turn])
    assert render(enc.ids) == expected
    assert [t.numel() for t in enc.media.get("image")] == [2, 3]
    assert [t.numel() for t in enc.media.get("audio")] == [4]


@pytest.mark.parametrize("placement", ["first", "sandwich", "inline"])
def test_media_without_text_is_just_the_media(placement):
    enc = template(placement).encode_turns([Turn("user", "", images=[2])])
    assert render(enc.ids) == "User: [image x2]\n\nAssistant:"


def test_inline_slots_follow_the_turn_structure_across_turns():
    turns = [Turn("user", ["Compare ", Slot("image"), " with ", Slot("image"), "."], images=[1, 2]),
             Turn("assistant", "Same."), Turn("user", ["Hear ", Slot("audio")], audio=[3])]
    enc = template("inline").encode_turns(turns)
    assert render(enc.ids) == ("User: Compare [image x1] with [image x2].\n\nAssistant: Same.\n\n"
                               "User: Hear [audio x3]\n\nAssistant:")
    assert [t.numel() for t in enc.media.get("image")] == [1, 2]


def test_typed_marker_text_never_creates_a_media_slot():
    enc = template("inline").encode_turns([Turn("user", "what is <image> and <audio>?")])
    assert IMG not in enc.ids and AUD not in enc.ids
    assert "<image>" in TOK.decode(enc.ids)
    enc = template("inline").encode_turns([Turn("user", "<image><image> now", images=[2])])
    assert enc.ids.count(IMG) == 2
    assert render(enc.ids) == "User: [image x2]\n<image><image> now\n\nAssistant:"


def test_parse_markers_for_trusted_dataset_text():
    assert parse_markers("<image>\nWhat is it? <audio>") == [Slot("image"), "\nWhat is it? ", Slot("audio")]


def test_inline_slot_and_item_counts_must_agree():
    with pytest.raises(MediaError, match="1 image slot.*2 image item"):
        template("inline").encode_turns([Turn("user", [Slot("image"), "hi"], images=[1, 2])])


def test_bad_role_placement_and_media_outside_user_turns():
    with pytest.raises(DataError, match="role 'bot'"):
        template().encode_turns([Turn("bot", "x")])
    with pytest.raises(DataError, match="placement 'middle'"):
        ChatTemplate(TOK, "middle")
    with pytest.raises(DataError, match="only user turns"):
        template().encode_turns([Turn("assistant", "x", images=[1])])
    with pytest.raises(MediaError, match="no model"):
        ChatTemplate(TOK).encode_turns([Turn("user", "x", images=[1])])


def test_collate_right_pads_and_keeps_media_batch_major():
    a = template().encode_turns([Turn("user", "A long question here", images=[2]), Turn("assistant", "Yes")],
                                train=True)
    b = template().encode_turns([Turn("user", "Q", images=[3]), Turn("assistant", "No")], train=True)
    batch = collate([a, b], meta=[{"id": 1}, {"id": 2}])
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (2, max(len(a.ids), len(b.ids)))
    short = 1 if len(b.ids) < len(a.ids) else 0
    n = len([a, b][short].ids)
    assert (labels[short, n:] == IGNORE).all() and (ids[short, n:] == 0).all()
    assert ids[0, : len(a.ids)].tolist() == a.ids and labels[1, : len(b.labels)].tolist() == b.labels
    assert [t.numel() for t in batch["media"].get("image")] == [2, 3]
    assert batch["meta"] == [{"id": 1}, {"id": 2}]
    assert isinstance(batch["media"], Media)


def test_collate_rejects_an_empty_batch():
    with pytest.raises(DataError, match="empty"):
        collate([])
    assert collate([Encoded([5], [IGNORE])])["input_ids"].tolist() == [[5]]
