"""The conversation as the caller sees it: lines kept raw, decoded when asked
for, credentials redacted, message data shown by its size."""

from __future__ import annotations

__all__ = ["Transcript"]

#: The most lines kept (a hostile server cannot grow it without bound).
TRANSCRIPT_LIMIT = 2000


class Transcript:
    """What was said on one session. Positions (:meth:`mark`) let each message
    under way take the lines from its own start; lines no message needs any
    more are dropped (:meth:`forget_before`).

    Each line may belong to one message (its ``owner``): with messages back
    to back, one message's commands and replies fall between another's, and
    a message's transcript shows only the session's own lines and its own,
    never another message's addresses."""

    __slots__ = ("_base", "_lines", "_owners", "redacting")

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        self._owners: list[object | None] = []
        self._base = 0  # the position of _lines[0]
        #: True during AUTH: lines the client sends are hidden.
        self.redacting = False

    def note(self, line: bytes, owner: object | None = None) -> None:
        if len(self._lines) < TRANSCRIPT_LIMIT:
            self._lines.append(line)
            self._owners.append(owner)

    def sent(self, line: bytes, owner: object | None = None) -> None:
        """A command the client wrote (redacted during AUTH)."""
        if not self.redacting:
            self.note(b"C: " + line, owner)
        elif line.startswith(b"AUTH "):
            words = line.split(b" ")
            self.note(b"C: " + b" ".join(words[:2]) + (b" <redacted>" if len(words) > 2 else b""), owner)
        else:
            self.note(b"C: <redacted>", owner)

    def disown(self, owner: object) -> None:
        """Make ``owner``'s lines the session's own (shown to every message)."""
        self._owners = [None if belongs_to is owner else belongs_to for belongs_to in self._owners]

    def mark(self) -> int:
        """The position of the next line."""
        return self._base + len(self._lines)

    def forget_before(self, position: int) -> None:
        """Drop the lines before ``position`` (no message under way needs them)."""
        drop = min(max(position - self._base, 0), len(self._lines))
        if drop:
            del self._lines[:drop]
            del self._owners[:drop]
            self._base += drop

    def lines(self, since: int = 0, owner: object | None = None) -> tuple[str, ...]:
        """The lines from position ``since``; for an ``owner``, only the
        session's own lines (owned by nobody) and that owner's."""
        start = max(since - self._base, 0)
        lines = self._lines[start:]
        if owner is not None:
            lines = [line for line, belongs_to in zip(lines, self._owners[start:], strict=True)
                     if belongs_to is None or belongs_to is owner]
        if not lines:
            return ()
        # Decoded at once rather than line by line: no line holds a CRLF (the
        # server's are split at them, the client's commands refuse them), and
        # a broken UTF-8 sequence decodes the same before a CR as at the end.
        return tuple(b"\r\n".join(lines).decode("utf-8", "replace").split("\r\n"))
