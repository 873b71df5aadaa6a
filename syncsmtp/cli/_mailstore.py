"""Where ``syncsmtp serve`` keeps what it receives: .eml files, an mbox, or a Maildir.

Each message is stored as received, after two trace headers that carry its
envelope (which the headers alone may not show, e.g. Bcc recipients):
``Return-Path: <sender>`` and one ``Delivered-To:`` per recipient, as a
local delivery agent writes them.

What is saved is private to the user: folders this module creates are 0700
and files it creates 0600, set with chmod so that no umask widens them
(mail in a development sink may hold password resets and tokens).
"""

from __future__ import annotations

import contextlib
import datetime
import mailbox
import os
import re
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
_PRIVATE_FOLDER = 0o700
_PRIVATE_FILE = 0o600
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _trace_value(address: str) -> bytes:
    """``address`` for a trace header, each control character as ``\\xNN``: the server
    refuses them, and this keeps a CR or LF from ending the line all the same."""
    return _CONTROL.sub(lambda match: b"\\x%02x" % match[0][0], address.encode("utf-8", "replace"))


def _with_envelope(message: ReceivedMessage) -> bytes:
    trace = b"Return-Path: <" + _trace_value(message.sender) + b">\r\n"
    for recipient in message.recipients:
        trace += b"Delivered-To: " + _trace_value(recipient) + b"\r\n"
    return trace + message.data


def _private_folders(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700; folders already there are left as they are."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:  # ends at the root at the latest
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(_PRIVATE_FOLDER)
        except FileExistsError:  # made meanwhile by someone else: theirs
            continue
        folder.chmod(_PRIVATE_FOLDER)


def _create_private(path: Path) -> int:
    """A new file at ``path``, 0600, open for writing; FileExistsError when there is one."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    try:
        os.fchmod(descriptor, _PRIVATE_FILE)  # the umask may have taken bits off the mode
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


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
            _private_folders(path)
            if not path.is_dir():
                raise NotADirectoryError("it is not a folder")
        except OSError as error:
            raise UsageError(f"cannot create the folder {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        data = _with_envelope(message)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for _ in range(_NAME_ATTEMPTS):
            self._count += 1
            target = self.path / f"{stamp}-{self._count:04d}.eml"
            try:
                descriptor = _create_private(target)  # never overwrites a file already there
            except FileExistsError:
                continue
            with open(descriptor, "wb") as handle:
                handle.write(data)
            return str(target)
        raise OSError(f"no free file name for the message in {self.path}")


class MboxFile(MailStore):
    """One mbox file (``From`` lines escaped, LF line ends), locked while written."""

    kind = "an mbox"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            _private_folders(path.parent)
            # An mbox already there is the user's, appended to with its permissions;
            # a new one is made here, as mailbox would make it with the umask's mode.
            with contextlib.suppress(FileExistsError):
                os.close(_create_private(path))
            self._mbox = mailbox.mbox(str(path), create=True)
        except OSError as error:
            raise UsageError(f"cannot open the mbox {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        entry = mailbox.mboxMessage(_with_envelope(message))
        entry.set_from(_trace_value(message.sender).decode() or "MAILER-DAEMON", time.gmtime())
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
            if not path.exists():
                # mailbox would make these 0700 minus the umask, and not the parents.
                for folder in (path / "cur", path / "new", path / "tmp"):
                    _private_folders(folder)
            self._maildir = mailbox.Maildir(str(path), create=True)
        except OSError as error:
            raise UsageError(f"cannot create the Maildir {str(path)!r}: {error}") from None

    def save(self, message: ReceivedMessage) -> str:
        key = self._maildir.add(_with_envelope(message))
        location = os.path.join(self.path, "new", key)
        # mailbox writes it 0666 minus the umask, in tmp (0700 when created here) and moves it here.
        os.chmod(location, _PRIVATE_FILE)
        return location


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
