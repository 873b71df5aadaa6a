"""Message data as it must leave: CRLF-only lines, dot-stuffed (no Twisted here).

Whatever the input's line endings (CRLF, bare LF, bare CR, mixed), every line
break becomes CRLF, so no bare CR or LF reaches the wire (SMTP smuggling), and
every line that starts with "." gets one more, across chunk boundaries and on
the first line too, so the data cannot end early.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["CHUNK_SIZE", "DataEncoder", "encode_data", "iter_encoded"]

#: How much input is encoded and written at a time.
CHUNK_SIZE = 256 * 1024


class DataEncoder:
    """Encodes message data chunk by chunk, carrying line state between chunks."""

    __slots__ = ("_at_line_start", "_pending_cr")

    def __init__(self) -> None:
        self._pending_cr = False
        self._at_line_start = True

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
        text = text.replace(b"\n", b"\r\n").replace(b"\n.", b"\n..")
        if self._at_line_start and text[:1] == b".":
            text = b"." + text
        self._at_line_start = text.endswith(b"\n")
        return text

    def finish(self) -> bytes:
        """The end of the data: a final line break if needed, then ``.CRLF``."""
        tail = b""
        if self._pending_cr:
            tail = b"\r\n"
            self._pending_cr = False
            self._at_line_start = True
        if not self._at_line_start:
            tail += b"\r\n"
        return tail + b".\r\n"


def iter_encoded(
    parts: Iterable[bytes] | bytes, chunk_size: int = CHUNK_SIZE, trailer: bytes = b""
) -> Iterator[bytes]:
    """Yield the wire form of ``parts`` (one message, in pieces of any size) in
    chunks of at least ``chunk_size`` bytes but the last, which carries the
    terminator (and then ``trailer``, e.g. a pipelined command).

    Joining the terminator to the last chunk saves a separate tiny write, which
    on a connection without TCP_NODELAY would wait for a delayed ACK.
    """
    if isinstance(parts, bytes | bytearray | memoryview):
        parts = (bytes(parts),)
    encoder = DataEncoder()
    pending: list[bytes] = []
    pending_size = 0
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), chunk_size):
            piece = encoder.encode(bytes(view[start : start + chunk_size]))
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= chunk_size:
                yield b"".join(pending)
                pending, pending_size = [], 0
    pending.append(encoder.finish() + trailer)
    yield b"".join(pending)


def encode_data(data: bytes) -> bytes:
    """The whole wire form of ``data`` at once (for tests and small messages)."""
    return b"".join(iter_encoded(data))
