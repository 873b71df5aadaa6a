"""``Mailer``: many messages over reused connections, from any number of threads."""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _messages, _reactor
from ._send_many import Outcomes, Outgoing, Watch, check_messages, prepare_item, progress_bar
from .client import DEFAULT_TIMEOUT, check_policy, check_timeout, wait_for_outcome
from .dsn import DSN, check_options, with_options
from .errors import MessageError, SendTimeout, SMTPError
from .message import Envelope, MessageInput, prepare_message
from .policy import Policy
from .result import SendReport, SendResult

if TYPE_CHECKING:
    from ._batch import Batch
    from ._pool import SessionPool

__all__ = ["DEFAULT_IDLE_TIMEOUT", "Mailer"]

#: How long a connection may stay unused before it is closed, in seconds.
DEFAULT_IDLE_TIMEOUT = 30.0
_BACKOFF_CAP = 60.0
#: How long close() waits for the connections to QUIT, by default.
_CLOSE_SECONDS = 10.0
#: At interpreter exit, how long open Mailers may take to QUIT.
_EXIT_CLOSE_SECONDS = 2.0
# How often send_many looks at a batch's progress: to move a progress bar, and
# otherwise to notice a batch that went quiet.
_BAR_SECONDS = 0.1
_CHECK_SECONDS = 1.0
# send_many hands prepared messages to the reactor this many at a time, and
# stops preparing while this many wait to be sent (memory stays bounded for
# an input of any length).
_FEED_SIZE = 32
_BACKLOG = 2000

# Mailers still open, closed politely at interpreter exit.
_open_mailers: weakref.WeakSet[Mailer] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


def _close_open_mailers() -> None:
    for mailer in list(_open_mailers):
        with contextlib.suppress(Exception):
            mailer.close(timeout=_EXIT_CLOSE_SECONDS)


def _install_exit_hook() -> None:
    """Close open Mailers while the reactor thread still runs: crochet stops it
    once the main thread has ended, and plain atexit hooks run after that."""
    global _exit_hook_installed
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is not None:
                register(_close_open_mailers)
            else:
                atexit.register(_close_open_mailers)
        except RuntimeError:  # the interpreter is already shutting down
            return
        _exit_hook_installed = True


def _new_pool(reactor: Any, policy: Policy, size: int, idle_timeout: float, rate: float | None,
              burst: int, throttle_backoff: float) -> SessionPool:
    from ._pool import SessionPool
    from ._throttle import Gate, TokenBucket

    gate = Gate(TokenBucket(rate, burst) if rate else None, throttle_backoff, _BACKOFF_CAP)
    return SessionPool(reactor, policy, size, idle_timeout, gate)


def _pool_send(reactor: Any, pool: SessionPool, *args: Any) -> Any:
    return pool.send(*args)


def _pool_open(reactor: Any, pool: SessionPool, timeout: float) -> Any:
    return pool.open(timeout)


def _pool_close(reactor: Any, pool: SessionPool) -> Any:
    return pool.close()


def _start_batch(reactor: Any, pool: SessionPool, timeout: float, connections: int, rate: Any,
                 retries: int, backoff: float, backoff_cap: float, report: Any) -> Batch:
    from ._batch import Batch

    return Batch(reactor, pool, timeout=timeout, connections=connections, rate=rate, retries=retries,
                 backoff=backoff, backoff_cap=backoff_cap, report=report)


def _add_to_batch(reactor: Any, batch: Batch, items: list[tuple[int, Envelope]]) -> None:
    batch.add(items)


def _cancel_batch(reactor: Any, batch: Batch) -> None:
    batch.cancel()


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

    ``connections`` caps the connections this Mailer opens; two Mailers for
    the same server have a cap each, so share one Mailer to keep to a
    provider's limit. ``rate`` (messages per second, None: no limit) paces
    every message the Mailer sends, whatever the thread or connection: one
    token bucket, a token taken just before each message's MAIL FROM. It
    holds ``burst`` tokens at most (default 1: never more than the rate, even
    after a quiet spell). A message waiting for its turn uses up its own
    ``timeout``; when that passes first it fails with
    :class:`~syncsmtp.SendTimeout` (stage ``connect``, nothing sent).

    A throttling reply (421, ``432 4.3.2``, ``451 4.7.x``, ``454 4.7.0``,
    ``454 Throttling failure``) pauses new messages for ``throttle_backoff``
    seconds, doubling with each pause in a row (at most 60), back to the
    first step once a message is accepted.
    """

    def __init__(
        self,
        policy: Policy,
        connections: int = 1,
        *,
        rate: float | None = None,
        burst: int = 1,
        throttle_backoff: float = 1.0,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        check_policy(policy, "Mailer")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(_messages.positive_integer("Mailer", "connections", connections))
        self.policy = policy
        self.connections = connections
        self.rate = _check_rate(rate, "Mailer")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(_messages.positive_integer("Mailer", "burst", burst))
        self.burst = burst
        self.throttle_backoff = check_timeout(throttle_backoff, "throttle_backoff", "Mailer")
        self.idle_timeout = check_timeout(idle_timeout, "idle_timeout", "Mailer")
        self._lock = threading.Lock()
        self._pool: SessionPool | None = None
        self._pool_pid = 0
        self._closed = False
        _open_mailers.add(self)
        _install_exit_hook()

    def _current_pool(self) -> SessionPool:
        with self._lock:
            if self._closed:
                raise SMTPError(_messages.mailer_closed(), host=self.policy.host)
            if self._pool is None or self._pool_pid != os.getpid():
                # In a forked child the parent's pool (and its sockets) is left alone.
                self._pool = _reactor.run(
                    _new_pool, self.policy, self.connections, self.idle_timeout, self.rate, self.burst,
                    self.throttle_backoff, timeout=30,
                )
                self._pool_pid = os.getpid()
            return self._pool

    def open(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect now, rather than at the first message: returns once a
        connection is set up (TLS and AUTH done), or raises the
        :class:`~syncsmtp.SMTPError` that says why it could not be. Does
        nothing more when a connection is already open."""
        deadline = check_timeout(timeout, "timeout", "Mailer.open()")
        _reactor.check_caller()
        pool = self._current_pool()
        from ._engine import Progress

        wait_for_outcome(self.policy, Progress(), deadline, _pool_open, pool, deadline)

    def send(
        self,
        message: MessageInput,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        sender: str | None = None,
        recipients: Iterable[str] | str | None = None,
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendResult:
        """Send one message over a pooled connection; like :func:`syncsmtp.send`
        otherwise (same arguments, ``dsn`` and ``require_tls`` included; same
        result and errors). ``timeout`` includes any wait for a free connection,
        for a token of the Mailer's ``rate`` and for a pause after a throttling
        reply."""
        deadline = check_timeout(timeout, "timeout", "Mailer.send()")
        check_options("Mailer.send()", dsn, require_tls)
        envelope = prepare_message(message, sender=sender, recipients=recipients, dkim=self.policy.dkim)
        envelope = with_options(envelope, message, dsn, require_tls)
        _reactor.check_caller()
        pool = self._current_pool()
        from ._engine import Progress

        progress = Progress()
        result: SendResult = wait_for_outcome(
            self.policy, progress, deadline, _pool_send, pool, envelope, deadline, progress
        )
        return result

    def send_many(
        self,
        messages: Iterable[
            MessageInput | Outgoing | tuple[MessageInput, str | None, Iterable[str] | str | None]
        ],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        rate: float | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        progress: bool = False,
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendReport:
        """Send every message of ``messages`` over the pool and report on all of them.

        Each item of ``messages`` is a message (an EmailMessage, whose
        headers give the envelope), or an :class:`~syncsmtp.Outgoing` or a
        ``(message, sender, recipients)`` tuple that gives the envelope, as
        ``send()``'s ``sender=`` and ``recipients=`` do: bytes and str need
        it. Both kinds may be mixed.

        A failure of one message never stops the others: the report has, per
        input message and in input order, its :class:`SendResult` or its error.
        ``timeout`` applies to each message, from when it is handed to a
        connection's queue. ``rate`` caps how many messages of this batch
        start per second; the Mailer's own ``rate`` applies as well, so the
        stricter of the two sets the pace. ``retries`` retries a transient
        failure (4xx, lost connection or time-out, never when the message may
        have been delivered) up to that many times, after ``backoff``
        seconds, doubling, at most 60; after a throttling reply, once the
        Mailer's pause is over. The report's ``throttled`` and ``waited``
        say how the server slowed the batch down. ``progress=True`` shows a
        progress bar when tqdm is installed (extra ``progress``). Ctrl-C
        stops the batch and drops the connections that were sending.

        ``dsn`` and ``require_tls`` apply to every message, as ``send()``
        takes them; an :class:`~syncsmtp.Outgoing` item may set its own.
        """
        where = "Mailer.send_many()"
        check_messages(messages)
        deadline = check_timeout(timeout, "timeout", where)
        rate = _check_rate(rate, where)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(_messages.non_negative_integer(where, "retries", retries))
        backoff = check_timeout(backoff, "backoff", where)
        if not isinstance(progress, bool):
            raise ValueError(_messages.flag(where, "progress", progress))
        check_options(where, dsn, require_tls)
        started = time.monotonic()
        _reactor.check_caller()
        pool = self._current_pool()
        results: list[SendResult | Exception | None] = []
        outcomes = Outcomes(results)
        gate_before = _reactor.run(lambda reactor: pool.gate.snapshot(reactor.seconds()), timeout=30)
        batch = _reactor.run(
            _start_batch, pool, deadline, self.connections, rate, retries, backoff, _BACKOFF_CAP,
            outcomes.put, timeout=30,
        )
        # Each message ends within its deadline; a whole backoff may come before a retry.
        watch = Watch(outcomes, progress_bar(progress, messages),
                      quiet_limit=deadline + _BACKOFF_CAP + (1.0 / rate if rate else 0.0) + 5.0,
                      bar_seconds=_BAR_SECONDS, check_seconds=_CHECK_SECONDS)
        fed, quiet = 0, False
        remaining = iter(messages)
        try:
            chunk: list[tuple[int, Envelope]] = []
            for message in remaining:
                # Prepared while the reactor sends the ones before.
                try:
                    chunk.append((len(results), prepare_item(message, self.policy.dkim, dsn, require_tls)))
                    results.append(None)
                except MessageError as error:
                    results.append(error)
                    watch.refused_early += 1
                if len(chunk) == _FEED_SIZE:
                    _reactor.post(_add_to_batch, batch, chunk)
                    fed, chunk = fed + len(chunk), []
                    if fed - outcomes.count > _BACKLOG and not watch.until(fed - _BACKLOG // 2):
                        quiet = True
                        break
            if not quiet:
                _reactor.post(_add_to_batch, batch, chunk)
                fed += len(chunk)
                quiet = not watch.until(fed)
        except BaseException:
            _reactor.run(_cancel_batch, batch, timeout=10)
            raise
        finally:
            watch.close()
        if quiet:
            _reactor.run(_cancel_batch, batch, timeout=10)
            for index, result in enumerate(results):
                if result is None:
                    results[index] = SendTimeout(
                        "the batch stopped hearing back from the reactor; this message's fate is unknown",
                        host=self.policy.host, stage="connect", maybe_delivered=True,
                    )
            results.extend(
                SMTPError("not sent: the batch stopped hearing back from the reactor before this "
                          "message's turn", host=self.policy.host, stage="connect")
                for _ in remaining
            )
        retried: int = _reactor.run(lambda reactor: batch.retried, timeout=10)
        throttled, waited = _reactor.run(lambda reactor: pool.gate.since(reactor.seconds(), gate_before),
                                         timeout=10)
        return SendReport(tuple(r for r in results if r is not None), retried, time.monotonic() - started,
                          throttled, waited)

    def close(self, timeout: float = _CLOSE_SECONDS) -> None:
        """Send QUIT on every connection and wait up to ``timeout`` seconds for
        them to close. Messages still waiting for a connection fail. Safe to
        call twice; called at interpreter exit for a Mailer still open."""
        timeout = check_timeout(timeout, "timeout", "Mailer.close()")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        _open_mailers.discard(self)
        if pool is None or self._pool_pid != os.getpid():
            return
        # On a time-out the connections are dropped instead of closed politely.
        with contextlib.suppress(_reactor.WaitTimedOut, _reactor.ReactorUnavailable):
            _reactor.run(_pool_close, pool, timeout=timeout)

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
        rate = f", rate={self.rate:g}" if self.rate else ""
        return f"Mailer({self.policy!r}, connections={self.connections}{rate}, {state})"


def _check_rate(rate: float | None, where: str) -> float | None:
    """``rate`` as a float (None: no limit); ValueError naming it otherwise."""
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not 0 < rate < math.inf):
        raise ValueError(_messages.must_be(
            where, "rate", "a positive, finite number per second (None: no limit)", rate
        ))
    return None if rate is None else float(rate)
