"""Where ``syncsmtp serve`` keeps what it receives: .eml files, an mbox, or a Maildir.

Each message is stored as received, after two trace headers that carry its
envelope (which the headers alone may not show, e.g. Bcc recipients):
``Return-Path: <sender>`` and one ``Delivered-To:`` per recipient, as a
local delivery agent writes them.
"""

from __future__ import annotations

import datetime
import mailbox
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._exit import UsageError

if TYPE_CHECKING:
    from ..testing import ReceivedMessage

__all__ = ["FORMATS", "EmlFolder", "MailStore", "MaildirFolder", "MboxFile", "default_path", "open_store"]

#: The storage formats, the first the default.
FORMATS = ("eml", "mbox", "maildir")
# How many names an .eml may try before giving up (another process writing the same names).
_NAME_ATTEMPTS = 1000


def _with_envelope(message: ReceivedMessage) -> bytes:
    trace = b"Return-Path: <" + message.sender.encode("utf-8", "replace") + b">\r\n"
    for recipient in message.recipients:
        trace += b"Delivered-To: " + recipient.encode("utf-8", "replace") + b"\r\n"
    return trace + message.data


class MailStore:
    """Keeps each received message; :meth:`save` says where it went."""

    kind = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, message: ReceivedMessage) -> str:
        """Store ``message``; returns its path (or its place in the mbox)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the store (flush an mbox)."""

    def describe(self) -> str:
        """Where messages go, in words."""
        return f"{self.kind} in {self.path}"


class EmlFolder(MailStore):
    """One ``.eml`` file per message (CRLF line ends, as received), named by
    arrival time and a counter: ``20260101-120000-0001.eml``."""

    kind = ".eml files"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._count = 0
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the folder {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        data = _with_envelope(message)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for _ in range(_NAME_ATTEMPTS):
            self._count += 1
            target = self.path / f"{stamp}-{self._count:04d}.eml"
            try:
                with open(target, "xb") as handle:  # never overwrite a file already there
                    handle.write(data)
            except FileExistsError:
                continue
            return str(target)
        raise OSError(f"no free file name for the message in {self.path}")


class MboxFile(MailStore):
    """One mbox file (``From`` lines escaped, LF line ends), locked while written."""

    kind = "an mbox"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._mbox = mailbox.mbox(str(path), create=True)
        except OSError as error:
            raise UsageError(f"cannot open the mbox {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        entry = mailbox.mboxMessage(_with_envelope(message))
        entry.set_from(message.sender or "MAILER-DAEMON", time.gmtime())
        self._mbox.lock()
        try:
            self._mbox.add(entry)
            self._mbox.flush()
            count = len(self._mbox)
        finally:
            self._mbox.unlock()
        return f"{self.path} (message {count})"

    def close(self) -> None:
        self._mbox.close()


class MaildirFolder(MailStore):
    """A Maildir (``cur``, ``new``, ``tmp``); each message lands in ``new``."""

    kind = "a Maildir"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._maildir = mailbox.Maildir(str(path), create=True)
        except OSError as error:
            raise UsageError(f"cannot create the Maildir {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        key = self._maildir.add(_with_envelope(message))
        return os.path.join(self.path, "new", key)


def default_path(kind: str) -> Path:
    """Where a format stores by default: in the current folder."""
    return Path("syncsmtp-mail.mbox" if kind == "mbox" else "syncsmtp-mail")


def open_store(kind: str, path: Path | None) -> MailStore:
    """The store of this format at ``path`` (its default when None)."""
    target = (path or default_path(kind)).absolute()
    if kind == "eml":
        return EmlFolder(target)
    if kind == "mbox":
        return MboxFile(target)
    if kind == "maildir":
        return MaildirFolder(target)
    raise UsageError(f"unknown format {kind!r}; formats: {', '.join(FORMATS)}")
