"""A demo client cannot point the server at other checkpoint directories nor learn its paths, and hostile audio
(a 1000003 Hz WAV) is an error line, not a memory bomb."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from mmrwkv.cli import build_parser
from mmrwkv.commands.demo import registry_for
from mmrwkv.demos.caption_vqa import CaptionDemo, CaptionOptions
from mmrwkv.demos.chat import ChatDemo, ChatOptions
from mmrwkv.demos.common import ModelRegistry, public_text
from mmrwkv.errors import CheckpointError

CONTROLS = (0.0, 1.0, 4)


def _last(demo, message, typed="", sid="s1"):
    *_, last = demo.respond(message, demo.options.checkpoint, typed, *CONTROLS, sid)
    return last[-1]["content"]


@pytest.fixture
def chat(tiny_checkpoint, tmp_path):
    return ChatDemo(ChatOptions(checkpoint=tiny_checkpoint, runs_dir=str(tmp_path / "runs")))


@pytest.mark.parametrize("typed", ["/root", "/", "/no/such/dir", "..", "/etc"])
def test_a_typed_path_outside_the_served_checkpoints_is_refused_alike(chat, typed):
    reply = _last(chat, {"text": "hi", "files": []}, typed)
    assert "is not served by this demo" in reply and "--allow-checkpoint-dir" in reply
    # the same answer whether the path exists or not, and no other path in it
    assert "not a multimodal" not in reply and "no such" not in reply


def test_an_allowed_folder_serves_the_checkpoints_inside_it(tiny_checkpoint, tmp_path):
    other = tmp_path / "allowed" / "copy"
    shutil.copytree(tiny_checkpoint, other)
    options = ChatOptions(
        checkpoint=tiny_checkpoint, runs_dir=str(tmp_path / "runs"), allow_dirs=(str(tmp_path / "allowed"),)
    )
    demo = ChatDemo(options)
    assert not _last(demo, {"text": "hi", "files": []}, str(other)).startswith("⚠️")
    switched = _last(demo, {"text": "hi", "files": []}, str(other), sid="s2")
    assert str(tmp_path) not in switched
    with pytest.raises(CheckpointError, match="not served"):
        demo.registry.get(str(tmp_path))


def test_the_demo_command_serves_what_it_was_started_with(tiny_checkpoint, tmp_path):
    args = build_parser().parse_args(["demo", "--checkpoint", tiny_checkpoint, "--runs-dir", str(tmp_path)])
    registry = registry_for(args)
    assert registry.key(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="not served"):
        registry.key("/root")
    args = build_parser().parse_args(["demo", "--allow-checkpoint-dir", str(tmp_path / "none")])
    with pytest.raises(CheckpointError, match="--allow-checkpoint-dir .*none: not a directory"):
        registry_for(args)


def test_the_library_registry_still_loads_any_path(tiny_checkpoint):
    assert ModelRegistry().key(tiny_checkpoint)


def _wav(path, rate):
    sf.write(path, (0.3 * np.random.default_rng(0).standard_normal(4800)).astype(np.float32), rate)
    return str(path)


def test_error_lines_name_uploads_by_file_name_only(chat, tmp_path):
    upload = _wav(tmp_path / "loud.wav", 1000003)
    reply = _last(chat, {"text": "what is this?", "files": [upload]})
    assert reply.startswith("⚠️ Error: audio loud.wav: sample rate 1000003 Hz is outside")
    assert str(tmp_path) not in reply


def test_caption_demo_refuses_other_checkpoints_and_hides_paths(tiny_checkpoint, tmp_path, images):
    demo = CaptionDemo(CaptionOptions(checkpoints=(tiny_checkpoint,), runs_dir=str(tmp_path)))
    *_, (left, right) = demo.compare(images[0], "", tiny_checkpoint, "/root", 0.0, 4)
    assert not left.startswith("⚠️") and "not served by this demo" in right
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    *_, (left, _) = demo.compare(str(broken), "", tiny_checkpoint, tiny_checkpoint, 0.0, 4)
    assert "broken.png" in left and str(tmp_path) not in left


def test_public_text_keeps_fractions_and_strips_absolute_paths():
    text = "1/2 and/or /tmp/gradio/abc/x.wav: bad ('/root/runs/final')"
    assert public_text(text) == "1/2 and/or x.wav: bad ('final')"
    assert public_text("/srv/ckpt: broken", {"/srv/ckpt": "ckpt"}) == "ckpt: broken"


def test_four_concurrent_uploads_of_a_megahertz_wav_stay_small(chat, tmp_path):
    import resource
    import threading

    upload = _wav(tmp_path / "mhz.wav", 1000003)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    replies = {}

    def ask(sid):
        replies[sid] = _last(chat, {"text": "hear this", "files": [upload]}, sid=sid)

    threads = [threading.Thread(target=ask, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all("sample rate 1000003 Hz" in r for r in replies.values()) and len(replies) == 4
    # ru_maxrss is in KiB: the peak grew by less than 200 MB (a 1000003 Hz resample asked for 64 GB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000


def test_streamed_updates_carry_only_this_turns_messages(chat):
    sizes = []
    for turn in range(6):
        updates = list(
            chat.respond_changes(
                {"text": f"question {turn}", "files": []}, chat.options.checkpoint, "", *CONTROLS, "s1"
            )
        )
        base, messages = updates[-1]
        assert base == 2 * turn and [m["role"] for m in messages] == ["user", "assistant"]
        sizes.append(max(len(str(m)) for _, m in updates))
    assert len(chat.store.get("s1").messages) == 12
    # the largest update of turn 6 is no larger than turn 1's (give or take the reply's length)
    assert sizes[-1] < 2 * sizes[0]
    chat.reset("s1")
    base, messages = list(
        chat.respond_changes({"text": "again", "files": []}, chat.options.checkpoint, "", *CONTROLS, "s1")
    )[-1]
    assert base == 0 and len(messages) == 2
