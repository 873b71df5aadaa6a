"""The conversation as the caller sees it: lines kept raw, decoded when asked
for, credentials redacted, message data shown by its size."""

from __future__ import annotations

__all__ = ["Transcript"]

#: The most lines kept (a hostile server cannot grow it without bound).
TRANSCRIPT_LIMIT = 2000


class Transcript:
    """What was said on one session, since it began or since the last :meth:`restart`."""

    __slots__ = ("_lines", "redacting")

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        #: True during AUTH: lines the client sends are hidden.
        self.redacting = False

    def note(self, line: bytes) -> None:
        if len(self._lines) < TRANSCRIPT_LIMIT:
            self._lines.append(line)

    def sent(self, line: bytes) -> None:
        """A command the client wrote (redacted during AUTH)."""
        if not self.redacting:
            self.note(b"C: " + line)
        elif line.startswith(b"AUTH "):
            words = line.split(b" ")
            self.note(b"C: " + b" ".join(words[:2]) + (b" <redacted>" if len(words) > 2 else b""))
        else:
            self.note(b"C: <redacted>")

    def received(self, line: bytes) -> None:
        self.note(b"S: " + line)

    def restart(self) -> None:
        """Forget what was said so far (a reused session's next message)."""
        self._lines = []

    def lines(self) -> tuple[str, ...]:
        return tuple(line.decode("utf-8", "replace") for line in self._lines)
