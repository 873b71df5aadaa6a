"""``Mailer``: many messages over reused connections, from any number of threads."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _reactor
from .client import DEFAULT_TIMEOUT, check_timeout, wait_for_outcome
from .errors import SMTPError
from .message import MessageInput, prepare_message
from .policy import Policy
from .result import SendResult

if TYPE_CHECKING:
    from ._pool import SessionPool

__all__ = ["DEFAULT_IDLE_TIMEOUT", "Mailer"]

#: How long a connection may stay unused before it is closed, in seconds.
DEFAULT_IDLE_TIMEOUT = 30.0
_CLOSE_SECONDS = 10.0


def _new_pool(reactor: Any, policy: Policy, size: int, idle_timeout: float) -> SessionPool:
    from ._pool import SessionPool

    return SessionPool(reactor, policy, size, idle_timeout)


def _pool_send(reactor: Any, pool: SessionPool, *args: Any) -> Any:
    return pool.send(*args)


def _pool_close(reactor: Any, pool: SessionPool) -> Any:
    return pool.close()


class Mailer:
    """Sends many messages to one server over up to ``connections`` reused,
    authenticated connections.

    Thread-safe: any number of threads may call :meth:`send` at once; each
    blocks only for its own message. Connections open on demand, are reused
    while they work, and are closed after ``idle_timeout`` seconds unused or
    by :meth:`close` (also on leaving a ``with`` block), which sends QUIT.

    A connection the server closed is replaced before a message is handed to
    it; if it dies before any of a message's data was sent, that message goes
    once more over another connection. Once DATA began, a message is never
    sent again: a loss then raises with ``maybe_delivered`` set.

    After ``os.fork()`` a child that uses the Mailer gets connections of its
    own; the parent's are never touched there.
    """

    def __init__(
        self, policy: Policy, connections: int = 1, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a syncsmtp.Policy, not {type(policy).__name__}")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be a positive integer, not {connections!r}")
        self.policy = policy
        self.connections = connections
        self.idle_timeout = check_timeout(idle_timeout)
        self._lock = threading.Lock()
        self._pool: SessionPool | None = None
        self._pool_pid = 0
        self._closed = False

    def _current_pool(self) -> SessionPool:
        with self._lock:
            if self._closed:
                raise SMTPError("this Mailer is closed", host=self.policy.host)
            if self._pool is None or self._pool_pid != os.getpid():
                # In a forked child the parent's pool (and its sockets) is left alone.
                self._pool = _reactor.run(
                    _new_pool, self.policy, self.connections, self.idle_timeout, timeout=30
                )
                self._pool_pid = os.getpid()
            return self._pool

    def send(
        self,
        message: MessageInput,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        sender: str | None = None,
        recipients: Iterable[str] | str | None = None,
    ) -> SendResult:
        """Send one message over a pooled connection; like :func:`syncsmtp.send`
        otherwise (same arguments, result and errors). ``timeout`` includes any
        wait for a free connection."""
        deadline = check_timeout(timeout)
        envelope = prepare_message(message, sender=sender, recipients=recipients)
        _reactor.check_caller()
        pool = self._current_pool()
        from ._engine import Progress

        progress = Progress()
        return wait_for_outcome(
            self.policy, progress, deadline, _pool_send, pool, envelope, deadline, progress
        )

    def close(self) -> None:
        """Send QUIT on every connection and wait (briefly) for them to close.
        Messages still waiting for a connection fail. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None or self._pool_pid != os.getpid():
            return
        # On a time-out the connections are dropped instead of closed politely.
        with contextlib.suppress(_reactor.WaitTimedOut, _reactor.ReactorUnavailable):
            _reactor.run(_pool_close, pool, timeout=_CLOSE_SECONDS)

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Mailer({self.policy!r}, connections={self.connections}, {state})"
