"""The wire encoding of message data: CRLF only, dot-stuffed, across chunk boundaries."""

from __future__ import annotations

import random
import re

import pytest

from syncsmtp._wire import DataEncoder, encode_data, iter_encoded


def decode_wire(wire: bytes) -> list[bytes]:
    """What a server reads back: lines, unstuffed, up to the terminator."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")[:-1] if wire != b".\r\n" else []
    return [line[1:] if line.startswith(b".") else line for line in lines]


def assert_clean(wire: bytes) -> None:
    assert re.search(rb"\r(?!\n)", wire) is None, "bare CR on the wire"
    assert re.search(rb"(?<!\r)\n", wire) is None, "bare LF on the wire"
    body = wire[:-3]
    assert b"\r\n.\r\n" not in body and not body.startswith(b".\r\n"), "early end of data"
    for line in body.split(b"\r\n"):
        if line.startswith(b"."):
            assert line.startswith(b".."), f"unstuffed dot line {line!r}"


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"no newline", b"no newline\r\n.\r\n"),
        (b".first\n", b"..first\r\n.\r\n"),
        (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
        (b"x\n..y\n", b"x\r\n...y\r\n.\r\n"),
        (b"smuggle\n.\r\nMAIL FROM:<x>\r\n", b"smuggle\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
        (b"smuggle\r\n.\nDATA\r\n", b"smuggle\r\n..\r\nDATA\r\n.\r\n"),
        (b"mid.dot\n", b"mid.dot\r\n.\r\n"),
    ],
)
def test_encodes(data: bytes, wire: bytes) -> None:
    assert encode_data(data) == wire
    assert_clean(wire)


def test_stock_twisted_transform_is_wrong_and_ours_is_right() -> None:
    """Twisted 26.10's transformChunk makes CR CR LF out of CRLF; we do not."""
    from twisted.mail.smtp import SMTPClient

    client = SMTPClient(b"localhost")
    assert client.transformChunk(b"a\r\nb") == b"a\r\r\nb"
    assert encode_data(b"a\r\nb") == b"a\r\nb\r\n.\r\n"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 16 * 1024])
def test_chunk_boundaries_change_nothing(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    alphabet = [b"a", b".", b"\r", b"\n", b"\r\n", b"x"]
    data = b"".join(rng.choice(alphabet) for _ in range(5000))
    whole = encode_data(data)
    assert b"".join(iter_encoded(data, chunk_size=chunk_size)) == whole
    assert_clean(whole)


def test_dot_right_after_a_16k_boundary() -> None:
    line = b"x" * (16 * 1024 - 1) + b"\n"
    data = line + b".hidden\n" + line + b".\n" + b"end\n"
    wire = b"".join(iter_encoded(data, chunk_size=16 * 1024))
    assert b"\r\n..hidden\r\n" in wire
    assert b"\r\n..\r\nend" in wire
    assert_clean(wire)


def test_round_trip_of_awkward_input() -> None:
    data = b".a\r\nb\nc\rd\r\n..e\n\rf"
    assert decode_wire(encode_data(data)) == [b".a", b"b", b"c", b"d", b"..e", b"", b"f"]


def test_trailer_follows_the_terminator() -> None:
    assert list(iter_encoded(b"hi", trailer=b"QUIT\r\n")) == [b"hi\r\n.\r\nQUIT\r\n"]


def test_encoder_holds_back_a_trailing_cr() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"a\r") == b"a"
    assert encoder.encode(b"\n.b") == b"\r\n..b"
    assert encoder.finish() == b"\r\n.\r\n"


@pytest.mark.parametrize("seed", range(20))
def test_a_small_message_in_parts_is_encoded_as_in_pieces(seed: int) -> None:
    """Parts of a small message are encoded in one pass when joining them
    changes nothing; that must give what encoding them a byte at a time gives,
    part ends with a CR (a line break of its own) included."""
    rng = random.Random(seed)
    alphabet = ["a", ".", "\r", "\n", "\r\n", "x"]
    parts: list[bytes | str] = []
    for _ in range(rng.randint(1, 5)):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        parts.append(text if rng.random() < 0.5 else text.encode("ascii"))
    for stuffing in (True, False):
        one_pass = list(iter_encoded(tuple(parts), trailer=b"QUIT\r\n", dot_stuffing=stuffing))
        in_pieces = b"".join(iter_encoded(tuple(parts), chunk_size=1, trailer=b"QUIT\r\n",
                                          dot_stuffing=stuffing))
        assert len(one_pass) == 1
        assert one_pass[0] == in_pieces
    assert_clean(b"".join(iter_encoded(tuple(parts))))


def test_a_part_ending_in_cr_is_a_line_break_of_its_own() -> None:
    assert b"".join(iter_encoded((b"a\r", b"\nb"))) == b"a\r\n\r\nb\r\n.\r\n"
    assert b"".join(iter_encoded((b"a\r", "b"))) == b"a\r\nb\r\n.\r\n"
