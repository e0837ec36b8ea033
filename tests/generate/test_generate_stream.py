"""TextStream: pieces never split a UTF-8 character and never contain a stop string."""

from hypothesis import given
from hypothesis import strategies as st

from mmrwkv.inference.generate import TextStream


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _run(stream: TextStream, chunks: list[bytes]) -> list[str]:
    pieces = [stream.feed(c) for c in chunks]
    return [p for p in pieces + [stream.flush()] if p]


def test_multibyte_character_split_across_tokens_is_held_back():
    stream = TextStream()
    emoji = "😀".encode()
    assert stream.feed(b"a" + emoji[:1]) == "a"
    assert stream.feed(emoji[1:3]) == ""
    assert stream.feed(emoji[3:]) == "😀"


@given(st.text(max_size=40), st.lists(st.integers(0, 200), max_size=12))
def test_pieces_join_to_the_text_and_are_whole_characters(text, cuts):
    pieces = _run(TextStream(), _chunks(text.encode(), cuts))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@given(
    st.text(alphabet="ab\n😀", max_size=20),
    st.sampled_from(["\n\n", "User:", "😀b"]),
    st.text(max_size=10),
    st.lists(st.integers(0, 200), max_size=12),
)
def test_stop_string_spanning_pieces_is_never_emitted(head, stop, tail, cuts):
    full = head + stop + tail
    stream = TextStream([stop])
    pieces = _run(stream, _chunks(full.encode(), cuts))
    assert "".join(pieces) == full[: full.find(stop)]
    assert stream.stopped
    assert all(stop not in p for p in pieces)


def test_possible_stop_prefix_is_released_once_it_diverges():
    stream = TextStream(["\n\nUser"])
    assert stream.feed(b"hi\n") == "hi"
    assert stream.feed(b"\nU") == ""
    assert stream.feed(b"x") == "\n\nUx"


def test_invalid_bytes_become_replacement_characters():
    stream = TextStream()
    assert stream.feed(b"a\xff b") == "a\ufffd b"
    assert stream.feed("你".encode()[:2]) == ""
    assert stream.flush() == "\ufffd"
