"""`mmrwkv generate --image/--audio` on a saved multimodal checkpoint."""

from mmrwkv.cli import main
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.session import ChatSession


def test_generate_streams_the_chat_answer_about_an_image(tiny_model, png, wav, tmp_path, capsys):
    ckpt = tiny_model.save(tmp_path / "mm")
    image, sound = tmp_path / "x.png", tmp_path / "x.wav"
    image.write_bytes(png(5))
    sound.write_bytes(wav(0.2))
    argv = ["generate", "--checkpoint", str(ckpt), "--image", str(image), "--audio", str(sound),
            "--prompt", "What is it?", "--temperature", "0", "--max-tokens", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert len(printed) > 1
    session = ChatSession(tiny_model, sampling=SamplingConfig(temperature=0, max_tokens=5, stop=["\n\n"]))
    assert printed == "".join(session.ask("What is it?", images=[image], audio=[sound])) + "\n"


def test_generate_reports_a_corrupt_image_by_name(tiny_model, png, tmp_path, capsys):
    ckpt = tiny_model.save(tmp_path / "mm")
    bad = tmp_path / "broken.png"
    bad.write_bytes(png(5)[:30])
    assert main(["generate", "--checkpoint", str(ckpt), "--image", str(bad), "--prompt", "Hi"]) == 2
    assert "broken.png" in capsys.readouterr().err
