"""Fuzzing the readers and media loaders with hypothesis: random bytes, WAV headers with random fields and random
JSON shapes end in the loader's own error (MediaError / DataError) or a result; never a traceback, a hang or an
allocation above the limits. A few seconds per target (fixed seed, bounded examples)."""

import io
import json
import resource
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmrwkv.data.readers import read_coco_captions, read_coco_karpathy, read_llava, read_vqav2
from mmrwkv.encoders.media import load_audio, load_image
from mmrwkv.errors import DataError, MediaError

FUZZ = settings(
    max_examples=50,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# the peak RSS of the whole fuzz run may grow by this much (KiB): far below what any limit allows
MAX_GROWTH_KIB = 600_000


@pytest.fixture(scope="module", autouse=True)
def bounded_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < MAX_GROWTH_KIB


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


@FUZZ
@given(st.binary(min_size=1, max_size=4096))
def test_random_bytes_as_an_image(data):
    try:
        load_image(data, max_pixels=1_000_000)
    except MediaError:
        pass


@FUZZ
@given(st.integers(0, len(PNG) - 1), st.binary(min_size=1, max_size=64))
def test_a_png_with_bytes_overwritten(at, junk):
    data = PNG[:at] + junk + PNG[at + len(junk) :]
    try:
        assert load_image(data, max_pixels=1_000_000).mode == "RGB"
    except MediaError:
        pass


@FUZZ
@given(st.binary(min_size=1, max_size=4096))
def test_random_bytes_as_audio(data):
    try:
        load_audio(data, sample_rate=16000, max_seconds=10.0)
    except MediaError:
        pass


def _wav(channels: int, rate: int, bits: int, claimed: int, payload: bytes, fmt: int) -> bytes:
    block = channels * max(1, bits // 8)
    header = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(header)) + header + b"data" + struct.pack("<I", claimed)
    return b"RIFF" + struct.pack("<I", (len(body) + len(payload)) & 0xFFFFFFFF) + body + payload


@st.composite
def wav_files(draw) -> bytes:
    """WAV files with plausible or wild header fields and a payload that may or may not match them."""
    fmt, bits = draw(st.sampled_from([(1, 16), (1, 8), (1, 32), (3, 32), (3, 64), (1, 24), (0xFFFE, 16), (2, 4)]))
    channels = draw(st.one_of(st.integers(1, 4), st.integers(1, 0xFFFF)))
    rate = draw(st.one_of(st.sampled_from([800, 16001, 48001, 1000003, 44100]), st.integers(1, 0xFFFFFFFF)))
    payload = draw(
        st.one_of(st.binary(max_size=64), st.integers(64, 8192).map(lambda n: bytes(range(256)) * (n // 256 + 1)))
    )
    claimed = draw(st.one_of(st.just(len(payload)), st.integers(0, 0xFFFFFFFF)))
    return _wav(channels, rate, bits, claimed, payload, fmt)


@FUZZ
@given(wav_files())
def test_wav_headers_with_random_fields(data):
    try:
        wave = load_audio(data, sample_rate=16000, max_seconds=10.0)
    except MediaError:
        return
    assert wave.dtype == torch.float32 and wave.dim() == 1 and wave.numel() <= 160_000


# the field names the dataset files use
NAMES = (
    "images annotations questions id image_id file_name filepath caption split sentences raw filename cocoid "
    "question question_id answers answer conversations from value image"
).split()
FIELDS = st.sampled_from(NAMES)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "../x.png", "/etc/passwd", "1.png", "a.png"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(FIELDS | st.text(max_size=4), inner, max_size=5),
    max_leaves=30,
)
RECORD = st.dictionaries(FIELDS, JSON, max_size=6)
# documents shaped like the datasets' files, with random records, or anything at all
DOCS = st.one_of(
    st.fixed_dictionaries({"images": st.lists(RECORD, max_size=4), "annotations": st.lists(RECORD, max_size=4)}),
    st.fixed_dictionaries({"questions": st.lists(RECORD, max_size=4), "annotations": st.lists(RECORD, max_size=4)}),
    st.lists(RECORD, max_size=4),
    JSON,
)


def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    Image.new("RGB", (4, 4)).save(root / "1.png")
    Image.new("RGB", (4, 4)).save(root / "a.png")
    return root


ROOT = _root()


def _write(doc) -> Path:
    path = ROOT / "doc.json"
    # lone surrogates and NaN pass through as JSON escapes and literals, as a hostile file would hold them
    path.write_text(json.dumps(doc, ensure_ascii=True))
    return path


@FUZZ
@given(DOCS, st.booleans())
def test_random_json_as_coco_captions(doc, skip):
    try:
        data = read_coco_captions(_write(doc), ROOT, skip_bad_records=skip)
    except DataError:
        return
    for sample in data.samples:
        assert sample.images[0].resolve().parent == ROOT.resolve()
        assert all(c.encode("utf-8") for c in sample.captions)


@FUZZ
@given(DOCS, st.sampled_from(["train", "val", "test"]))
def test_random_json_as_a_karpathy_split(doc, split):
    try:
        read_coco_karpathy(_write(doc), ROOT, split=split, skip_bad_records=True)
    except DataError:
        pass


@FUZZ
@given(DOCS)
def test_random_json_as_llava(doc):
    try:
        read_llava(_write(doc), ROOT, skip_bad_records=True)
    except DataError:
        pass


@FUZZ
@given(DOCS, DOCS)
def test_random_json_as_vqav2(questions, annotations):
    q = _write(questions)
    a = ROOT / "answers.json"
    a.write_text(json.dumps(annotations))
    try:
        read_vqav2(q, ROOT, a, skip_bad_records=True)
    except DataError:
        pass
