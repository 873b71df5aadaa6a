"""Header injection, as Flask-Mail checks for it: a line break in a header value."""

from __future__ import annotations

from typing import Any

from ..errors import MessageError

__all__ = ["BadHeaderError", "bad_subject", "has_newline", "unfold"]

_BAD_HEADER = "a header value contains a CR or LF (header injection); remove the line breaks"


class BadHeaderError(MessageError):
    """A header value has a line break in it (header injection).

    Flask-Mail's exception of the same name; here it is also a
    :class:`syncsmtp.MessageError` (so a ``ValueError``), and it is raised
    before anything is sent.
    """

    def __init__(self, message: str = _BAD_HEADER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


def has_newline(value: str) -> bool:
    """True when ``value`` holds a CR or an LF."""
    return "\r" in value or "\n" in value


def _is_folded(subject: str) -> bool:
    """Whether every line break is a CRLF that folds the line (Flask-Mail's rule)."""
    for number, line in enumerate(subject.split("\r\n")):
        if not line.strip() or has_newline(line) or (number > 0 and line[0] not in "\t "):
            return False
    return True


def bad_subject(subject: str) -> bool:
    """True when the subject has a line break other than a CRLF that folds it
    (followed by a space or tab), which Flask-Mail allows there."""
    return has_newline(subject) and not _is_folded(subject)


def unfold(value: str) -> str:
    """A folded subject on one line."""
    return value.replace("\r\n", "")
