"""``Mailer``: many messages over reused connections, from any number of threads."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _reactor
from .client import DEFAULT_TIMEOUT, check_timeout, wait_for_outcome
from .errors import MessageError, SendTimeout, SMTPError
from .message import MessageInput, prepare_message
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


def _new_pool(reactor: Any, policy: Policy, size: int, idle_timeout: float) -> SessionPool:
    from ._pool import SessionPool

    return SessionPool(reactor, policy, size, idle_timeout)


def _pool_send(reactor: Any, pool: SessionPool, *args: Any) -> Any:
    return pool.send(*args)


def _pool_close(reactor: Any, pool: SessionPool) -> Any:
    return pool.close()


def _start_batch(reactor: Any, pool: SessionPool, items: Any, timeout: float, window: int, rate: Any,
                 retries: int, backoff: float, backoff_cap: float, report: Any) -> Batch:
    from ._batch import Batch

    batch = Batch(reactor, pool, items, timeout=timeout, window=window, rate=rate, retries=retries,
                  backoff=backoff, backoff_cap=backoff_cap, report=report)
    batch.start()
    return batch


def _cancel_batch(reactor: Any, batch: Batch) -> None:
    batch.cancel()


class _Outcomes:
    """Where the reactor thread leaves each message's outcome of a batch. The
    waiting caller is woken once, when the last is in, not once per message:
    a thread switch per message would cost more than the rest of its work."""

    def __init__(self, results: list[SendResult | Exception | None], expected: int) -> None:
        self._results = results
        self._expected = expected
        self.count = 0
        self._all_in = threading.Lock()
        if expected:
            self._all_in.acquire()

    def put(self, index: int, outcome: SendResult | Exception) -> None:
        """Called in the reactor thread, once per message."""
        self._results[index] = outcome
        self.count += 1
        if self.count == self._expected:
            self._all_in.release()

    def wait(self, seconds: float) -> bool:
        """Whether every outcome is in, waiting up to ``seconds`` for it."""
        return self._all_in.acquire(timeout=seconds)


def _progress_bar(wanted: bool, total: int, done: int) -> Any:
    """A tqdm bar (the notebook one in Jupyter) when asked for and installed."""
    if not wanted:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, unit="msg")


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
        _open_mailers.add(self)
        _install_exit_hook()

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

    def send_many(
        self,
        messages: Iterable[MessageInput],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        rate: float | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        progress: bool = False,
    ) -> SendReport:
        """Send every message of ``messages`` over the pool and report on all of them.

        A failure of one message never stops the others: the report has, per
        input message and in input order, its :class:`SendResult` or its error.
        ``timeout`` applies to each message. ``rate`` caps how many messages
        start per second. ``retries`` retries a transient failure (4xx, lost
        connection or time-out, never when the message may have been
        delivered) up to that many times, after ``backoff`` seconds, doubling,
        at most 60. ``progress=True`` shows a progress bar when tqdm is
        installed (extra ``progress``). Ctrl-C stops the batch and drops the
        connections that were sending.
        """
        deadline = check_timeout(timeout)
        if rate is not None and not (isinstance(rate, int | float) and rate > 0):
            raise ValueError(f"rate must be a positive number of messages per second, not {rate!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        backoff = check_timeout(backoff)
        started = time.monotonic()
        results: list[SendResult | Exception | None] = []
        items = []
        for message in messages:
            try:
                items.append((len(results), prepare_message(message)))
                results.append(None)
            except MessageError as error:
                results.append(error)
        _reactor.check_caller()
        pool = self._current_pool()
        outcomes = _Outcomes(results, len(items))
        batch = _reactor.run(
            _start_batch, pool, items, deadline, self.connections * 2, rate, retries, backoff,
            _BACKOFF_CAP, outcomes.put, timeout=30,
        )
        bar = _progress_bar(progress, len(results), len(results) - len(items))
        # Each message ends within its deadline; a whole backoff may come before a retry.
        quiet_limit = deadline + _BACKOFF_CAP + (1.0 / rate if rate else 0.0) + 5.0
        shown = heard = 0
        last_heard = time.monotonic()
        try:
            while not outcomes.wait(_BAR_SECONDS if bar is not None else _CHECK_SECONDS):
                now, count = time.monotonic(), outcomes.count
                if bar is not None:
                    bar.update(count - shown)
                    shown = count
                if count != heard:
                    heard, last_heard = count, now
                elif now - last_heard > quiet_limit:
                    break
            if bar is not None:
                bar.update(outcomes.count - shown)
        except BaseException:
            _reactor.run(_cancel_batch, batch, timeout=10)
            raise
        finally:
            if bar is not None:
                bar.close()
        if outcomes.count < len(items):
            _reactor.run(_cancel_batch, batch, timeout=10)
            for index, result in enumerate(results):
                if result is None:
                    results[index] = SendTimeout(
                        "the batch stopped hearing back from the reactor; this message's fate is unknown",
                        host=self.policy.host, stage="connect", maybe_delivered=True,
                    )
        retried: int = _reactor.run(lambda reactor: batch.retried, timeout=10)
        return SendReport(tuple(r for r in results if r is not None), retried, time.monotonic() - started)

    def close(self, timeout: float = _CLOSE_SECONDS) -> None:
        """Send QUIT on every connection and wait up to ``timeout`` seconds for
        them to close. Messages still waiting for a connection fail. Safe to
        call twice; called at interpreter exit for a Mailer still open."""
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
        return f"Mailer({self.policy!r}, connections={self.connections}, {state})"
