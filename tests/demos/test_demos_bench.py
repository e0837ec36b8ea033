"""`mmrwkv bench demo` and the per-session media memo it relies on for cached images."""

import shutil
from pathlib import Path

from mmrwkv.bench import demo as bench
from mmrwkv.cli import main
from mmrwkv.demos.sessions import DemoSession


def test_resent_image_is_preprocessed_once_and_its_prefix_comes_from_the_cache(tiny_model, images, tmp_path):
    calls = []
    encoder = tiny_model.encoders["image"]
    hook = encoder.register_forward_hook(lambda *_: calls.append(1))
    copy = tmp_path / "same_content.png"
    shutil.copy(images[0], copy)
    session = DemoSession("s")
    session.bind("tiny", tiny_model)
    sampling = bench.make_demo(tiny_model, 2).sampling(0, 1, 1)
    try:
        "".join(session.chat.ask("look", images=[images[0]], sampling=sampling))
        first = session.chat.prefill_tokens
        session.reset()
        # the same picture uploaded again (another temp path, same bytes)
        "".join(session.chat.ask("look", images=[str(copy)], sampling=sampling))
    finally:
        hook.remove()
    assert len(calls) == 1, "the cached image must not be encoded again"
    assert session.chat.cache.hits == 1 and session.chat.cache.media_entries == 1
    assert session.chat.prefill_tokens - first < first


def test_handler_measurement_streams_fixed_length_answers(tiny_model, images):
    demo = bench.make_demo(tiny_model, 4)
    result = bench.measure_handler(demo, images[:2], 2)
    assert set(result) == {"new", "cached", "cached+q"}
    for runs in result.values():
        assert len(runs) == 2 and all(t > 0 and s > 0 and upload == 0 and cpu > 0 for t, s, upload, cpu in runs)
    turn = demo.store.get("bench-handler-0").chat.turns[-1]
    assert len(tiny_model.tokenizer.encode(turn.text)) >= 3


def test_bench_demo_prints_both_image_cases_for_the_recipe_shape(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "easy_vqa.yaml"
    code = main(
        [
            "bench",
            "demo",
            "--recipe",
            str(recipe),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--repeats",
            "1",
            "--answer-tokens",
            "3",
            "--image-side",
            "32",
            "--no-server",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "random model shaped like" in out and "handler  new" in out and "handler  cached" in out
    assert "cached / new: first token: median" in out and "cached+q / new: first token: median" in out
    assert "first token cpu: median" in out


def test_server_measurement_separates_the_upload(tiny_model, images, monkeypatch):
    decodes = []
    original = tiny_model.preprocess
    monkeypatch.setattr(tiny_model, "preprocess", lambda kind, item: decodes.append(item) or original(kind, item))
    demo = bench.make_demo(tiny_model, 3)
    result = bench.measure_server(demo, images[:1], 1)
    assert set(result) == {"new", "cached", "cached+q"}
    for ((ttft, stream, upload, in_handler, sent, in_server, server_stream),) in result.values():
        assert 0 < upload < ttft and 0 < in_handler < ttft - upload and stream >= 0
        assert upload + in_handler < sent <= ttft  # the server sends the first token before the client shows it
        # the server's part starts when the message joins its queue, after the upload
        assert in_handler < in_server < sent - upload
        # the server streamed the later tokens over time (one send per piece)
        assert server_stream > 0 and bench.tokens_per_s(3, server_stream) is not None
    # three uploads of the same bytes (a new server path each time): decoded once, then only hashed
    assert len(decodes) == 1


def test_the_default_checkpoint_is_the_newest_one_with_an_image_encoder(tmp_path):
    import json
    import os

    for age, (name, encoders) in enumerate([("audio", {"audio": {}}), ("vqa", {"image": {}}), ("old", {"image": {}})]):
        folder = tmp_path / name / "final"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"kind": "multimodal", "encoders": encoders}))
        os.utime(folder, (1000 - age, 1000 - age))
    # the audio-only run is the newest but is passed over; "vqa" is the newest with images
    assert bench.image_checkpoints(str(tmp_path)) == [str(tmp_path / "vqa" / "final"), str(tmp_path / "old" / "final")]


def test_tokens_per_s_is_none_when_one_update_carried_the_answer(capsys):
    assert bench.tokens_per_s(33, 0.5) == 64.0
    # the whole answer in one update (no time from the first to the last): no rate, not a division by ~0
    assert bench.tokens_per_s(32, 0.0) is None and bench.tokens_per_s(32, 2e-6) is None
    assert bench.tokens_per_s(1, 0.5) is None
    # a server row: the rate comes from the server's sends (last tuple item), not from what the client received
    run = (0.2, 0.0, 0.05, 0.002, 0.1, 0.01, 0.031)
    summary = bench._summary([run], 32)
    assert summary["rate"] == 1000.0
    assert bench._summary([(*run[:6], 0.0)], 32)["rate"] is None
    bench._print_path("server", {name: summary | {"rate": None} for name in ("new", "cached", "cached+q")})
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("server   new")]
    assert rows and rows[0].split()[-2] == "n/a"
