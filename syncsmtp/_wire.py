"""Message data as it must leave: CRLF-only lines, dot-stuffed after DATA,
framed in BDAT chunks with CHUNKING (no Twisted here).

Whatever the input's line endings (CRLF, bare LF, bare CR, mixed), every line
break becomes CRLF, so no bare CR or LF reaches the wire (SMTP smuggling). After
DATA, every line that starts with "." gets one more, across chunk boundaries
and on the first line too, so the data cannot end early; BDAT counts octets
instead, so the data goes as it is (still CRLF-only, and ending in CRLF).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["CHUNK_SIZE", "DataEncoder", "encode_data", "encoded_size", "iter_bdat", "iter_encoded",
           "joined_parts"]

#: How much input is encoded and written at a time.
CHUNK_SIZE = 256 * 1024


class DataEncoder:
    """Encodes message data chunk by chunk, carrying line state between chunks."""

    __slots__ = ("_at_line_start", "_dot_stuffing", "_pending_cr")

    def __init__(self, dot_stuffing: bool = True) -> None:
        self._pending_cr = False
        self._at_line_start = True
        self._dot_stuffing = dot_stuffing

    def encode(self, chunk: bytes) -> bytes:
        """Encode the next chunk of input; may hold back a trailing CR."""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # It may be the first half of a CRLF split across chunks.
            chunk = chunk[:-1]
            self._pending_cr = True
        if not chunk:
            return b""
        text = chunk.replace(b"\r\n", b"\n")
        if b"\r" in text:
            text = text.replace(b"\r", b"\n")
        text = text.replace(b"\n", b"\r\n")
        if self._dot_stuffing:
            text = text.replace(b"\n.", b"\n..")
            if self._at_line_start and text[:1] == b".":
                text = b"." + text
        self._at_line_start = text.endswith(b"\n")
        return text

    def end_part(self) -> bytes:
        """The end of one part of the message: a CR held back is a line break
        of its own (the email package normalises each part by itself)."""
        if not self._pending_cr:
            return b""
        self._pending_cr = False
        self._at_line_start = True
        return b"\r\n"

    def finish(self) -> bytes:
        """The end of the data: a final line break if needed, then ``.CRLF``
        (after DATA; BDAT needs no terminator)."""
        tail = b""
        if self._pending_cr:
            tail = b"\r\n"
            self._pending_cr = False
            self._at_line_start = True
        if not self._at_line_start:
            tail += b"\r\n"
        return tail + b".\r\n" if self._dot_stuffing else tail


def _slices(part: bytes | str, size: int) -> Iterator[bytes]:
    if isinstance(part, str):
        for start in range(0, len(part), size):
            yield part[start : start + size].encode("ascii")
    elif len(part) <= size:
        yield part
    else:
        view = memoryview(part)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])


def iter_encoded(
    parts: Iterable[bytes | str] | bytes, chunk_size: int = CHUNK_SIZE, trailer: bytes = b"",
    *, dot_stuffing: bool = True,
) -> Iterator[bytes]:
    """Yield the wire form of ``parts`` (one message, in pieces of any size:
    bytes, or ASCII text encoded here, a slice at a time) in chunks of at
    least ``chunk_size`` bytes but the last, which carries the terminator (and
    then ``trailer``, e.g. a pipelined command).

    Joining the terminator to the last chunk saves a separate tiny write, which
    on a connection without TCP_NODELAY would wait for a delayed ACK.
    """
    if isinstance(parts, (bytes, bytearray, memoryview)):
        parts = (bytes(parts),)
    encoder = DataEncoder(dot_stuffing)
    whole = _small_message(parts, chunk_size)
    if whole is not None:
        # One pass over the joined parts instead of one per part.
        yield encoder.encode(whole) + encoder.end_part() + encoder.finish() + trailer
        return
    pending: list[bytes] = []
    pending_size = 0
    for part in parts:
        for piece in _slices(part, chunk_size):
            encoded = encoder.encode(piece)
            pending.append(encoded)
            pending_size += len(encoded)
            if pending_size >= chunk_size:
                yield b"".join(pending)
                pending, pending_size = [], 0
        pending.append(encoder.end_part())
    pending.append(encoder.finish() + trailer)
    yield b"".join(pending)


def _small_message(parts: Iterable[bytes | str], chunk_size: int) -> bytes | None:
    """The parts of a message shorter than ``chunk_size`` as one ``bytes``
    (ASCII text encoded), when joining them changes nothing: None when the
    message is longer, or when a part but the last ends in a CR (a line break
    of its own, which the next part's LF must not turn into a CRLF)."""
    if not isinstance(parts, tuple) or sum(map(len, parts)) >= chunk_size:
        return None
    if any(part.endswith("\r" if isinstance(part, str) else b"\r") for part in parts[:-1]):
        return None
    return joined_parts(parts)


def joined_parts(parts: Iterable[bytes | str]) -> bytes:
    """The parts of a message as one ``bytes``, ASCII text encoded (as they
    are: no line break changed)."""
    return b"".join(part.encode("ascii") if isinstance(part, str) else part for part in parts)


def iter_bdat(
    parts: Iterable[bytes | str] | bytes, chunk_size: int = CHUNK_SIZE, trailer: bytes = b""
) -> Iterator[bytes]:
    """The message in BDAT chunks (RFC 3030): each ``BDAT <n>`` command with its
    ``n`` octets, the last one ``BDAT <n> LAST`` followed by ``trailer``. Chunks
    are about ``chunk_size`` octets, so memory stays bounded whatever the
    message's size."""
    held: bytes | None = None
    for chunk in iter_encoded(parts, chunk_size, dot_stuffing=False):
        if held is not None and chunk:
            yield b"BDAT %d\r\n" % len(held) + held
            held = chunk
        elif held is None:
            held = chunk
    assert held is not None  # iter_encoded yields at least one chunk
    yield b"BDAT %d LAST\r\n" % len(held) + held + trailer


def encoded_size(part: bytes | str) -> int:
    """How long ``part`` is with every line break a CRLF (before dot-stuffing,
    as SIZE counts a message)."""
    if isinstance(part, str):  # counted as it is: encoding would copy a large body
        lf, cr = part.count("\n"), part.count("\r")
        crlf = part.count("\r\n") if cr else 0  # most text has no CR: one pass saved
    else:
        lf, cr = part.count(b"\n"), part.count(b"\r")
        crlf = part.count(b"\r\n") if cr else 0
    # Each bare LF or bare CR becomes two bytes.
    return len(part) + (lf - crlf) + (cr - crlf)


def encode_data(data: bytes) -> bytes:
    """The whole wire form of ``data`` at once (for tests and small messages)."""
    return b"".join(iter_encoded(data))
