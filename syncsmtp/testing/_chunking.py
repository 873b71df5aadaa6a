"""BDAT (RFC 3030, CHUNKING) for the test server: the session's input as lines, and after
each BDAT command exactly the octets of its chunk, raw.

Twisted's SMTP server is a ``LineOnlyReceiver``: it splits a whole read into
lines before handling the first, so it cannot stop at a BDAT command and take
what follows as octets. :class:`ChunkingStream` does the splitting instead,
one line at a time: a client that writes ``MAIL``, ``RCPT``, ``BDAT n LAST``,
the chunk and the next ``MAIL`` at once is answered in order, and a chunk
may hold CRLF, lines that start with ``.`` and any octet, untouched.
Without Twisted: the session is seen through :class:`ChunkingSession`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ._received import Envelope
from ._script import Fault

__all__ = ["ChunkingSession", "ChunkingStream", "parse_bdat"]

_DELIMITER = b"\r\n"
_SYNTAX = (501, b"5.5.4 Syntax: BDAT <size> [LAST]")
_NO_TRANSACTION = (503, b"5.5.1 Bad sequence of commands: MAIL FROM and RCPT TO first")
_TOO_BIG = (552, b"5.3.4 Message size exceeds fixed limit")


def parse_bdat(rest: bytes) -> tuple[int, bool] | None:
    """``(size, last)`` from what follows ``BDAT``, or None when it is not
    ``1*DIGIT [SP "LAST"]`` (RFC 3030; LAST in any case, as SMTP keywords are)."""
    words = rest.split()
    if not 1 <= len(words) <= 2 or not (words[0].isdigit() and words[0].isascii()):
        return None
    if len(words) == 2 and words[1].upper() != b"LAST":
        return None
    return int(words[0]), len(words) == 2


class ChunkingSession(Protocol):
    """What the stream needs from the session (Twisted's names first, then the session's own)."""

    MAX_LENGTH: int

    def lineReceived(self, line: bytes) -> object: ...  # noqa: N802
    def lineLengthExceeded(self, line: bytes) -> object: ...  # noqa: N802
    def resetTimeout(self) -> None: ...  # noqa: N802
    def sendCode(self, code: int, message: bytes = ...) -> None: ...  # noqa: N802

    def listening(self) -> bool:
        """False once input is to be ignored: a stalled session, a closing connection."""

    def envelope(self) -> Envelope | None:
        """The transaction in progress: None before MAIL FROM and an accepted RCPT TO."""

    def end_envelope(self) -> None:
        """End the transaction (after BDAT LAST, accepted or not)."""

    def take_fault(self, stage: str) -> Fault | None: ...

    def enact(self, fault: Fault) -> None:
        """Apply a fault at once: its reply, a dropped connection, a stall."""

    def size_limit(self) -> int:
        """The SIZE announced in EHLO, or 0 for none."""

    def accept(self, envelope: Envelope, data: bytes, raw: bytes, chunks: tuple[int, ...] | None) -> None:
        """Record a complete message and answer it (faults at end-of-data included)."""


@dataclass
class _Message:
    """The BDAT transaction in progress: the chunks taken so far, or the refusal that every
    further chunk of it gets (RFC 3030: after a failed BDAT the server still reads, and
    refuses, the chunks a pipelining client had already sent, up to LAST)."""

    envelope: Envelope
    refusal: tuple[int, bytes] | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass
class _Chunk:
    """The chunk being read: its octets are kept for the message, or only counted off."""

    size: int
    last: bool
    message: _Message | None
    refusal: tuple[int, bytes] | None
    remaining: int = 0
    parts: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.remaining = self.size


class ChunkingStream:
    """A session's input: command and DATA lines, and BDAT chunks read raw."""

    def __init__(self, session: ChunkingSession) -> None:
        self._session = session
        self._buffer = b""
        self._chunk: _Chunk | None = None
        self._message: _Message | None = None

    # -- the input ---------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Hand ``data`` on: lines to ``lineReceived``, chunk octets to the chunk being read.

        Line handling is ``LineOnlyReceiver``'s: nothing is read after a line that
        closes the connection or stalls the session, and a line over
        ``MAX_LENGTH`` goes to ``lineLengthExceeded`` while the read's other
        complete lines are dropped.
        """
        session = self._session
        buffer, start = self._buffer + data, 0
        self._buffer = b""
        while session.listening():
            if self._chunk is not None:
                after = self._take_octets(self._chunk, buffer, start)
                if after is None:
                    return  # all of ``buffer`` belonged to the chunk; more is to come
                start = after
                continue
            end = buffer.find(_DELIMITER, start)
            if end < 0:
                break
            line, start = buffer[start:end], end + len(_DELIMITER)
            if len(line) > session.MAX_LENGTH:
                self._buffer = buffer[buffer.rfind(_DELIMITER) + len(_DELIMITER):]
                session.lineLengthExceeded(line)
                return
            session.lineReceived(line)
        else:
            return  # stalled or closing: what is left is never read
        self._buffer = buffer[start:]
        if len(self._buffer) > session.MAX_LENGTH:
            session.lineLengthExceeded(self._buffer)

    def _take_octets(self, chunk: _Chunk, buffer: bytes, start: int) -> int | None:
        """Where the input goes on after ``chunk``'s octets, or None while it needs more."""
        count = min(chunk.remaining, len(buffer) - start)
        if count:
            if chunk.refusal is None:
                chunk.parts.append(buffer[start:start + count])
            chunk.remaining -= count
            self._session.resetTimeout()  # a large chunk on a slow link is not an idle client
        if chunk.remaining:
            return None
        self._chunk = None
        self._chunk_read(chunk)
        return start + count

    # -- BDAT ----------------------------------------------------------------------------------

    def command(self, rest: bytes) -> None:
        """Handle ``BDAT <rest>``: the reply comes once the chunk's octets are read,
        whether they are kept or not, so that the input stays in step."""
        parsed = parse_bdat(rest)
        if parsed is None:
            # No size, so no octets to skip: what follows is read as commands.
            self._session.sendCode(*_SYNTAX)
            return
        size, last = parsed
        message = self._current()
        if message is not None:
            refusal = message.refusal
        else:
            # The first BDAT of a message is its "data" stage in the fault script, as DATA is.
            fault = self._session.take_fault("data")
            if fault is not None and fault.kind != "fail":
                self._session.enact(fault)  # dropped or stalled: no octets are read
                return
            refusal = (fault.code, fault.text.encode()) if fault is not None else None
            envelope = self._session.envelope()
            if envelope is None:
                refusal = refusal or _NO_TRANSACTION
            else:
                message = self._message = _Message(envelope, refusal)
        if message is not None and refusal is None:
            limit = self._session.size_limit()
            if limit and message.size + size > limit:
                refusal = message.refusal = _TOO_BIG
                message.chunks.clear()  # never delivered: no need to hold them until LAST
        self._chunk = _Chunk(size, last, message, refusal)

    def _chunk_read(self, chunk: _Chunk) -> None:
        session, message = self._session, chunk.message
        if chunk.refusal is not None:
            session.sendCode(*chunk.refusal)
            if chunk.last and message is not None:
                self._end()
            return
        assert message is not None
        message.chunks.append(b"".join(chunk.parts))
        message.size += chunk.size
        if not chunk.last:
            session.sendCode(250, b"2.0.0 %d octets received" % chunk.size)
            return
        self._end()
        data = b"".join(message.chunks)
        session.accept(message.envelope, data, data, tuple(len(part) for part in message.chunks))

    # -- the transaction -----------------------------------------------------------------------

    def _current(self) -> _Message | None:
        """The BDAT message in progress, if its transaction still is (RSET, EHLO, STARTTLS
        and the like end it by replacing or clearing the session's envelope)."""
        if self._message is not None:
            envelope = self._session.envelope()
            if envelope is None or envelope.key is not self._message.envelope.key:
                self._message = None
        return self._message

    def in_transaction(self) -> bool:
        """True between a message's first BDAT and its LAST (no RCPT TO, no DATA then)."""
        return self._current() is not None

    def abandon(self) -> None:
        """Forget the chunks taken so far (the session ends the transaction)."""
        self._message = None

    def _end(self) -> None:
        self._message = None
        self._session.end_envelope()
