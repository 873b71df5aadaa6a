"""The conversation as the caller sees it: lines kept raw, decoded when asked
for, credentials redacted, message data shown by its size."""

from __future__ import annotations

__all__ = ["Lines", "Transcript"]

#: The most lines one transcript keeps (a hostile server cannot grow it
#: without bound).
TRANSCRIPT_LIMIT = 2000

#: One message's own transcript (see :meth:`Transcript.open`).
Lines = list[bytes]


class Transcript:
    """What was said on one session.

    The session's own lines (set-up, QUIT, a notice) are kept since it last
    had no message under way. Each message under way has its own list
    (:meth:`open`), which gets its own lines and the session's: with messages
    back to back, one message's commands and replies fall between another's,
    and a message's transcript shows only the session's lines and its own,
    never another message's addresses. Kept apart rather than sorted out of
    one list when a message ends: ``send_many`` over 8 connections went from
    4,276 to 4,004 bytecodes a message in the reactor thread with this."""

    __slots__ = ("_lines", "_open", "redacting")

    def __init__(self) -> None:
        self._lines: Lines = []
        self._open: list[Lines] = []
        #: True during AUTH: lines the client sends are hidden.
        self.redacting = False

    def note(self, line: bytes, owner: Lines | None = None) -> None:
        """A line of a message's (``owner``: its list) or of the session's."""
        if owner is not None:
            if len(owner) < TRANSCRIPT_LIMIT:
                owner.append(line)
            return
        for lines in (self._lines, *self._open):
            if len(lines) < TRANSCRIPT_LIMIT:
                lines.append(line)

    def sent(self, line: bytes, owner: Lines | None = None) -> None:
        """A command the client wrote (redacted during AUTH)."""
        if not self.redacting:
            self.note(b"C: " + line, owner)
        elif line.startswith(b"AUTH "):
            words = line.split(b" ")
            self.note(b"C: " + b" ".join(words[:2]) + (b" <redacted>" if len(words) > 2 else b""), owner)
        else:
            self.note(b"C: <redacted>", owner)

    def open(self, from_start: bool) -> Lines:
        """A new message's transcript: empty, or (``from_start``, the first
        message of a session) with the session's lines so far."""
        lines = self._lines[:] if from_start else []
        self._open.append(lines)
        return lines

    def close(self, lines: Lines) -> None:
        """The message of ``lines`` has its outcome: it gets no more lines."""
        for index, open_lines in enumerate(self._open):
            if open_lines is lines:
                del self._open[index]
                return

    def forget(self) -> None:
        """No message is under way: the session's lines so far are needed no more."""
        self._lines = []

    def adopt(self, lines: Lines) -> None:
        """The session's lines become ``lines``: the transcript of its first
        message (which holds the session's lines too), written with AUTH and
        now part of set-up; it is closed."""
        self.close(lines)
        self._lines = lines[:]

    def lines(self, own: Lines | None = None) -> tuple[str, ...]:
        """A message's lines (``own``), else the session's."""
        lines = self._lines if own is None else own
        if not lines:
            return ()
        # Decoded at once rather than line by line: no line holds a CRLF (the
        # server's are split at them, the client's commands refuse them), and
        # a broken UTF-8 sequence decodes the same before a CR as at the end.
        return tuple(b"\r\n".join(lines).decode("utf-8", "replace").split("\r\n"))
