"""What the test server and its sessions share: the settings a connection works with, the
fault script, and the record of what was received.

This is the whole interface between :class:`~syncsmtp.testing.SMTPTestServer`
(the test's thread) and its sessions (the reactor thread): a session is given
a :class:`ServerCore` and asks it for nothing else. Plain data and locks,
without Twisted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ._received import ReceivedMessage
from ._script import Script

__all__ = ["Connection", "ServerCore", "SessionSettings"]


@dataclass(frozen=True)
class SessionSettings:
    """The server's options as they stood when a connection opened (later changes to the
    server's attributes apply to later connections)."""

    tls: Literal["starttls", "implicit", "none"]
    hostname: str
    users: Mapping[str, str]
    auth_mechanisms: tuple[str, ...]
    auth_requires_tls: bool
    require_auth: bool
    extensions: tuple[str, ...]
    ehlo: bool
    #: AUTH takes any user name and password (``syncsmtp serve --auth-any``).
    accept_any_credentials: bool = False
    #: ``check(user, token)``: whether an OAuth2 bearer token is valid now (None: no OAuth2).
    oauth2_check: Callable[[str, str], bool] | None = field(default=None, repr=False)
    #: The ``IOpenSSLServerConnectionCreator`` for TLS, None with ``tls="none"``.
    tls_creator: Any = field(default=None, repr=False)

    @property
    def offers_auth(self) -> bool:
        """True when AUTH is offered at all (on an encrypted connection, or on any)."""
        return bool(self.users) or self.accept_any_credentials or self.oauth2_check is not None

    def size_limit(self) -> int:
        """The SIZE announced among the extensions, or 0 for none."""
        for keyword in self.extensions:
            name, _, value = keyword.partition(" ")
            if name.upper() == "SIZE" and value.isdigit():
                return int(value)
        return 0

    def announces(self, keyword: str) -> bool:
        """True when ``keyword`` (upper case, e.g. ``"CHUNKING"``) is among the extensions."""
        return any(k.partition(" ")[0].upper() == keyword for k in self.extensions)


class Connection(Protocol):
    """What the server needs of an open connection: a way to end it."""

    def abort(self) -> None:
        """Close the connection at once, whatever is buffered."""


class ServerCore:
    """The server's state shared by the test's thread and the reactor thread.

    Sessions call :meth:`settings`, :attr:`script`, :meth:`opened`,
    :meth:`record`, :meth:`closed` and :meth:`deliver`; the server reads and
    clears what they recorded. Every method may be called from either thread.
    """

    def __init__(self, settings: Callable[[], SessionSettings]) -> None:
        self._settings = settings
        #: The faults in force (written by the test, taken by the sessions).
        self.script = Script()
        #: Called in the reactor thread with each message accepted, after it is in the outbox.
        self.on_message: Callable[[ReceivedMessage], object] | None = None
        self._lock = threading.Condition()
        self._outbox: list[ReceivedMessage] = []
        self._commands: list[list[bytes]] = []
        self._open: set[Connection] = set()
        self._on_drained: Callable[[], None] | None = None

    # -- what the sessions call (reactor thread) ---------------------------------------------

    def settings(self) -> SessionSettings:
        """The settings for a connection opening now."""
        return self._settings()

    def opened(self, connection: Connection) -> list[bytes]:
        """Count a new connection; the list its command lines are to be recorded in."""
        commands: list[bytes] = []
        with self._lock:
            self._open.add(connection)
            self._commands.append(commands)
        return commands

    def record(self, commands: list[bytes], line: bytes) -> None:
        """Record a command line received on the connection that ``commands`` belongs to."""
        with self._lock:
            commands.append(line)

    def closed(self, connection: Connection) -> None:
        """Forget a connection that closed (the last one may end a graceful stop)."""
        with self._lock:
            self._open.discard(connection)
            drained = self._on_drained if not self._open else None
            if drained is not None:
                self._on_drained = None
        if drained is not None:
            drained()

    def deliver(self, message: ReceivedMessage) -> None:
        """Put an accepted message in the outbox, and hand it to :attr:`on_message`."""
        with self._lock:
            self._outbox.append(message)
            self._lock.notify_all()
        if self.on_message is not None:
            self.on_message(message)

    # -- what the server calls ----------------------------------------------------------------

    def when_drained(self, callback: Callable[[], None] | None) -> bool:
        """Call ``callback`` once the last open connection has closed; False (and no call)
        when none is open. None cancels a callback not yet called."""
        with self._lock:
            if callback is not None and not self._open:
                return False
            self._on_drained = callback
            return True

    def abort_all(self) -> None:
        """Close every open connection at once."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.abort()

    def outbox(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._outbox)

    def commands(self) -> list[list[bytes]]:
        with self._lock:
            return [list(lines) for lines in self._commands]

    def connections(self) -> int:
        with self._lock:
            return len(self._commands)

    def wait_for(self, count: int, timeout: float) -> list[ReceivedMessage]:
        """The outbox once it holds ``count`` messages; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._outbox) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the test server received {len(self._outbox)} messages, not {count}, "
                        f"within {timeout} s"
                    )
                self._lock.wait(remaining)
            return list(self._outbox)

    def forget(self) -> None:
        """Forget the messages and command lines recorded so far."""
        with self._lock:
            self._outbox.clear()
            self._commands.clear()
