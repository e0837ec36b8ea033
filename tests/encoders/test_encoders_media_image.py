"""load_image: mode conversions to RGB and MediaError on every kind of bad input (all made on the fly)."""

import io

import numpy as np
import pytest
from PIL import Image

from mmrwkv.encoders.media import load_image
from mmrwkv.errors import MediaError


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_png_from_path_and_bytes_round_trips(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    for src in (path, str(path), path.read_bytes()):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (7, 5)
        assert np.array_equal(np.asarray(out), arr)


def test_grayscale_becomes_three_equal_channels():
    out = load_image(_png_bytes(Image.new("L", (4, 3), 77)))
    assert out.mode == "RGB"
    assert np.all(np.asarray(out) == 77)


def test_transparent_rgba_is_composited_on_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (10, 20, 30, 255))
    out = np.asarray(load_image(_png_bytes(img)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (2, 1), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = np.asarray(load_image(_png_bytes(img, transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 0, 0]


def test_sixteen_bit_grayscale_is_rescaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    out = np.asarray(load_image(_png_bytes(Image.fromarray(arr))))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_pil_image_input_is_converted():
    out = load_image(Image.new("LA", (3, 3), (0, 0)))
    assert out.mode == "RGB" and np.all(np.asarray(out) == 255)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a recognised image"),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not a recognised image"),
    ],
)
def test_bad_bytes_raise_media_error(data, problem):
    with pytest.raises(MediaError, match=problem):
        load_image(data)


def test_truncated_png_names_the_file(tmp_path):
    data = _png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.png.*(corrupt|truncated)"):
        load_image(path)


def test_missing_and_empty_files_are_refused(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.png.*empty"):
        load_image(tmp_path / "empty.png")


def test_unsupported_format_is_refused():
    # ICO is a format PIL decodes but the loader does not accept
    data = _png_bytes(Image.new("RGB", (16, 16)), fmt="ICO")
    with pytest.raises(MediaError, match="unsupported format ICO"):
        load_image(data)


def test_pixel_limit_is_checked_before_decoding():
    data = _png_bytes(Image.new("RGB", (100, 100)))
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(MediaError, match="10000 pixels is over the limit of 9999"):
        load_image(data, max_pixels=9_999)


def test_decompression_bomb_header_is_refused_without_decoding():
    # a PNG header claiming 100k x 100k pixels with no real pixel data behind it
    small = _png_bytes(Image.new("L", (1, 1)))
    ihdr = small.index(b"IHDR")
    import struct
    import zlib

    fields = struct.pack(">II", 100_000, 100_000) + small[ihdr + 12 : ihdr + 17]
    chunk = b"IHDR" + fields
    bomb = small[: ihdr - 4] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[ihdr + 21 :]
    with pytest.raises(MediaError, match="over the (pixel )?limit"):
        load_image(bomb)


def test_wrong_source_type_is_refused():
    with pytest.raises(MediaError, match="path or bytes"):
        load_image(12345)
