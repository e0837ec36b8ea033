"""Real-format fixtures for the audio captioning CSVs: AudioCaps (one row per caption, five rows per clip in
val/test) and Clotho (`file_name, caption_1..caption_5`, names with spaces and accents, quoted captions)."""

import csv
import unicodedata

import numpy as np
import pytest
import soundfile as sf

from mmrwkv.data.audio_readers import read_audiocaps, read_clotho
from mmrwkv.errors import DataError


def _clip(path, rate=44100, seconds=0.2):
    t = np.arange(int(rate * seconds)) / rate
    data = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None].repeat(2, axis=1)
    sf.write(path, data, rate)
    return path


def _write_csv(path, header, rows, *, bom=False, newline="\r\n"):
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle, lineterminator=newline)
        writer.writerow(header)
        writer.writerows(rows)
    return path


AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]
AUDIOCAPS_TEST = [
    [103541, "-kQ-GwUhUJA", 30, "A man speaks, followed by a loud bang"],
    [103542, "-kQ-GwUhUJA", 30, "An adult male speaks and a gun fires, "],
    [103543, "-kQ-GwUhUJA", 30, "A man talking as a gunshot goes off"],
    [103544, "-kQ-GwUhUJA", 30, "A man is speaking then a gun is fired"],
    [103545, "-kQ-GwUhUJA", 30, "A man talks, and then a gunshot sounds"],
    [97151, "--0w1YA1Hm4", 30, "A vehicle driving as a man and woman are talking and laughing"],
]


@pytest.mark.parametrize(
    "name",
    ["{yid}_{start}.wav", "Y{yid}_{start}.000_{end}.000.flac", "{yid}.ogg", "Y{yid}.wav", "{capid}.mp3"],
)
def test_audiocaps_finds_clips_under_the_common_download_names(tmp_path, name):
    audio = tmp_path / "audio"
    audio.mkdir()
    for yid, capid in (("-kQ-GwUhUJA", 103544), ("--0w1YA1Hm4", 97151)):
        _clip(audio / name.format(yid=yid, start=30, end=40, capid=capid))
    path = _write_csv(tmp_path / "test.csv", AUDIOCAPS_HEADER, AUDIOCAPS_TEST, bom=True)
    data = read_audiocaps(path, audio, split="test")
    gun, car = data.samples
    assert gun.id == "-kQ-GwUhUJA_30" and len(gun.captions) == 5
    assert gun.captions[1] == "An adult male speaks and a gun fires,"
    assert gun.meta["audiocap_ids"] == ["103541", "103542", "103543", "103544", "103545"]
    assert car.captions == ["A vehicle driving as a man and woman are talking and laughing"]
    assert gun.audio[0].parent == audio and gun.task == "caption"
    assert gun.conversation()[0] == ("user", "<audio>Describe the sound.")


def test_audiocaps_missing_clip_is_named(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    _clip(audio / "-kQ-GwUhUJA_30.wav")
    path = _write_csv(tmp_path / "test.csv", AUDIOCAPS_HEADER, AUDIOCAPS_TEST)
    with pytest.raises(DataError, match=r"test\.csv: record row 7 \(audiocap_id 97151\): no audio file"):
        read_audiocaps(path, audio)
    data = read_audiocaps(path, audio, skip_bad_records=True)
    assert len(data) == 1 and data.skipped == 1


CLOTHO_HEADER = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
CLOTHO_ROWS = [
    ["Distorted AM Radio noise.wav", "A radio dispatcher and an officer are communicating over the radio.",
     "A radio dispatcher is communicating with an officer via radio.", "Radio static, with beeps, makes noise.",
     'Someone is "tuning" a radio, and the static changes.', "The radio, emits static   and a voice  "],
    ["Café terrasse, Paris.wav", "People talk at a cafe.", "Cups clink while people chat.",
     "A busy cafe with chatter.", "Dishes clatter; people converse.", "Voices and dishes in a cafe."],
]


@pytest.mark.parametrize("bom", [False, True])
def test_clotho_names_with_spaces_accents_and_quoted_captions(tmp_path, bom):
    audio = tmp_path / "evaluation"
    audio.mkdir()
    _clip(audio / CLOTHO_ROWS[0][0])
    # an archive extracted on macOS stores accents decomposed
    _clip(audio / unicodedata.normalize("NFD", CLOTHO_ROWS[1][0]))
    path = _write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER, CLOTHO_ROWS, bom=bom)
    radio, cafe = read_clotho(path, audio)
    assert radio.id == "Distorted AM Radio noise.wav" and radio.audio == [audio / "Distorted AM Radio noise.wav"]
    assert radio.captions[3] == 'Someone is "tuning" a radio, and the static changes.'
    assert radio.captions[4] == "The radio, emits static and a voice"
    assert cafe.audio[0].is_file() and len(cafe.captions) == 5


def test_clotho_wrong_header_names_the_columns(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["file_name", "caption"], [["a.wav", "x"]])
    with pytest.raises(DataError, match=r"c\.csv: missing column\(s\) caption_1"):
        read_clotho(path, tmp_path)
