"""The caption / VQA side-by-side demo: two checkpoints stream their answers to one image."""

import pytest
from gradio_client import Client, handle_file

from mmrwkv.demos.caption_vqa import CAPTION_PROMPT, CaptionDemo, CaptionOptions, build_caption_app
from mmrwkv.demos.common import build_random_tiny, free_port, launch_app

MAX_TOKENS = 6


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory):
    """Another tiny model (different weights), standing in for a recipe with another image encoder."""
    path = tmp_path_factory.mktemp("ckpt_b") / "tiny_b"
    build_random_tiny(seed=7).save(path)
    return str(path)


@pytest.fixture(scope="module")
def caption_server(tiny_checkpoint, second_checkpoint, tmp_path_factory):
    options = CaptionOptions(checkpoints=(tiny_checkpoint, second_checkpoint),
                             runs_dir=str(tmp_path_factory.mktemp("runs")))
    app = build_caption_app(options)
    port = free_port()
    launch_app(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", app
    app.close()


def _expected(checkpoint: str, prompt: str, image: str, demo_helpers) -> str:
    from mmrwkv.multimodal import MultimodalRWKV

    model = MultimodalRWKV.load(checkpoint).eval()
    return demo_helpers.library_chat(model, [(prompt, [image])], MAX_TOKENS)[0][0].strip()


@pytest.mark.parametrize("question", ["", "What shape is it?"])
def test_both_answers_stream_and_equal_each_models_greedy_answer(caption_server, tiny_checkpoint, second_checkpoint,
                                                                  images, demo_helpers, question):
    url, _ = caption_server
    client = Client(url, verbose=False, download_files=False)
    job = client.submit(handle_file(images[3]), question, tiny_checkpoint, second_checkpoint, 0.0, MAX_TOKENS,
                        api_name="/compare")
    left, right = job.result(timeout=60)
    prompt = question or CAPTION_PROMPT
    assert left == _expected(tiny_checkpoint, prompt, images[3], demo_helpers)
    assert right == _expected(second_checkpoint, prompt, images[3], demo_helpers)
    assert left != right
    assert len({tuple(out) for out in job.outputs()}) > 2, "the answers did not stream"
    client.close()


def test_corrupt_image_shows_an_error_on_both_sides(caption_server, tiny_checkpoint, tmp_path):
    url, _ = caption_server
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    client = Client(url, verbose=False, download_files=False)
    left, right = client.predict(handle_file(str(broken)), "", tiny_checkpoint, tiny_checkpoint, 0.0, 4,
                                 api_name="/compare")
    assert left.startswith("⚠️ Error:") and "broken.jpg" in left and right.startswith("⚠️ Error:")
    client.close()


def test_a_bad_checkpoint_fails_only_its_own_side(tiny_checkpoint, images, tmp_path, demo_helpers):
    # a folder the demo may serve from (--allow-checkpoint-dir), where the typed checkpoint is missing
    demo = CaptionDemo(CaptionOptions(checkpoints=(tiny_checkpoint,), runs_dir=str(tmp_path),
                                      allow_dirs=(str(tmp_path),)))
    *_, (left, right) = demo.compare(images[0], "", str(tmp_path / "missing"), tiny_checkpoint, 0.0, MAX_TOKENS)
    assert left.startswith("⚠️ Error:") and "no such checkpoint" in left
    assert right == _expected(tiny_checkpoint, CAPTION_PROMPT, images[0], demo_helpers)


def test_no_image_and_no_checkpoint_are_explained(tmp_path, images):
    demo = CaptionDemo(CaptionOptions(runs_dir=str(tmp_path)))
    assert demo.choices() == []
    *_, (left, _) = demo.compare(None, "", None, None, 0.0, 4)
    assert "no image" in left
    *_, (left, right) = demo.compare(images[0], "", None, None, 0.0, 4)
    assert "make run" in left and "make run" in right
