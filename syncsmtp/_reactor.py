"""The reactor thread: the only module that talks to crochet.

``crochet.setup()`` runs lazily, on the first call that needs the reactor, so
importing syncsmtp starts no thread. An application that runs Twisted's
reactor itself calls ``crochet.no_setup()`` before its first send, and
syncsmtp then uses that reactor.

crochet starts, stops and logs for the reactor thread; handing a call to it
and waiting for the answer is done here, with one lock per call, because
crochet's ``EventualResult`` costs about 20 µs more of each send's CPU.

After ``os.fork()`` the child has the parent's reactor object but not its
thread, and that object shares its epoll instance and wake-up pipe with the
parent's. The child must never run it: on its first call it installs a fresh
reactor and starts it in a new crochet event loop, and never touches the
inherited one (nor the sockets it holds).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ReactorUnavailable", "WaitTimedOut", "check_caller", "in_reactor_thread", "post", "run"]


class WaitTimedOut(Exception):
    """The reactor gave no answer within the caller's deadline (the work was cancelled)."""


class ReactorUnavailable(Exception):
    """The reactor has stopped (the interpreter is shutting down)."""


#: Gives up the interpreter lock while it yields the CPU (see _Call.settle).
_sched_yield: Callable[[], None] | None = getattr(os, "sched_yield", None)


class _Call:
    """One function run in the reactor thread for a caller that blocks on it."""

    __slots__ = ("_args", "_deferred", "_done", "_function", "_hand_over", "_outcome", "_settled", "failed")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], hand_over: bool = False) -> None:
        self._function = function
        self._args = args
        self._hand_over = hand_over
        self._settled = threading.Lock()
        self._settled.acquire()
        self._outcome: Any = None
        self._deferred: Any = None
        self._done = False  # only read and written in the reactor thread
        self.failed = False

    def run(self, reactor: Any) -> None:
        """Reactor thread: call the function and settle with what it returns,
        or, for a Deferred, with what that fires with."""
        global _reactor_thread
        _reactor_thread = threading.get_ident()
        try:
            result = self._function(reactor, *self._args)
        except BaseException as error:  # raised again in the caller's thread
            self.settle(error, failed=True)
            return
        if hasattr(result, "addCallbacks"):  # a Deferred
            self._deferred = result
            result.addCallbacks(self.settle, lambda failure: self.settle(failure.value, failed=True))
        else:
            self.settle(result)

    def settle(self, outcome: Any, failed: bool = False) -> None:
        """Reactor thread: the outcome, once; it wakes the caller."""
        if not self._done:
            self._done = True
            self._outcome, self.failed = outcome, failed
            self._settled.release()
            if self._hand_over:
                # Let the caller, which has its answer, run now rather than once
                # this thread blocks: the rest of the reactor's turn (a one-shot
                # send's QUIT reply, closing TLS) would hold the interpreter lock.
                if _sched_yield is not None:
                    _sched_yield()
                else:
                    time.sleep(0)

    def cancel(self) -> None:
        """Reactor thread (queued after :meth:`run`): cancel the work; a
        Deferred's canceller runs and the call settles with its failure."""
        if self._deferred is not None and not self._deferred.called:
            self._deferred.cancel()

    def wait(self, timeout: float) -> bool:
        return self._settled.acquire(timeout=timeout)

    def outcome(self) -> Any:
        if self.failed:
            raise self._outcome
        return self._outcome


class _Loop:
    """A running reactor and the calls waiting on it."""

    def __init__(self, reactor: Any) -> None:
        self.pid = os.getpid()
        self.reactor = reactor
        self._pending: set[_Call] = set()
        self._stopped = False
        # Before crochet's own shutdown work, so no caller waits on a reactor that is gone.
        if reactor.running:
            reactor.callFromThread(reactor.addSystemEventTrigger, "before", "shutdown", self._stop)
        else:
            reactor.addSystemEventTrigger("before", "shutdown", self._stop)

    def _stop(self) -> None:
        self._stopped = True
        for call in list(self._pending):
            call.settle(ReactorUnavailable(), failed=True)

    def submit(self, call: _Call) -> None:
        # Registered before the check: _stop either sees it or has set _stopped.
        self._pending.add(call)
        if self._stopped:
            self._pending.discard(call)
            raise ReactorUnavailable()
        self.reactor.callFromThread(self._run, call)

    def _run(self, call: _Call) -> None:
        call.run(self.reactor)

    def done(self, call: _Call) -> None:
        self._pending.discard(call)


_lock = threading.Lock()
_loop: _Loop | None = None
# Set in a forked child when the parent had a Twisted reactor installed.
_inherited_reactor = False
# The ident of the thread that runs the reactor, learnt from the first call
# that runs there (cheaper to compare than asking Twisted on every send).
_reactor_thread: int | None = None


def _after_fork_in_child() -> None:
    global _inherited_reactor, _lock, _reactor_thread
    _inherited_reactor = _loop is not None or "twisted.internet.reactor" in sys.modules
    # The parent's lock may have been held by another thread at fork time.
    _lock = threading.Lock()
    _reactor_thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_global_loop() -> _Loop:
    import crochet
    from twisted.internet import reactor

    loop = _Loop(reactor)
    crochet.setup()
    return loop


class _ExitWatch(threading.Thread):
    """Runs crochet's shutdown functions when the main thread ends, in a child
    whose crochet watchdog (a parent's thread) does not exist."""

    def __init__(self) -> None:
        super().__init__(name="syncsmtp-exit-watch", daemon=True)
        self._functions: list[Callable[[], object]] = []

    def register(self, function: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self._functions.append(functools.partial(function, *args, **kwargs))

    def run(self) -> None:
        threading.main_thread().join()
        for function in reversed(self._functions):
            try:
                function()
            except Exception:  # noqa: S112 (shutdown must go on whatever one step does)
                continue


def _start_fresh_loop() -> _Loop:
    """Install a new reactor in place of an inherited one and run it in a new thread."""
    import crochet
    import twisted.internet
    from twisted.internet import default
    from twisted.internet.process import reapAllProcesses

    sys.modules.pop("twisted.internet.reactor", None)
    twisted.internet.__dict__.pop("reactor", None)
    default.install()
    from twisted.internet import reactor

    exit_watch = _ExitWatch()
    # crochet's EventLoop is what crochet.setup() itself runs; a fresh one
    # drives the fresh reactor.
    event_loop = crochet.EventLoop(  # type: ignore[attr-defined]
        lambda: reactor, exit_watch.register, None, exit_watch, reapAllProcesses
    )
    loop = _Loop(reactor)
    event_loop.setup()
    return loop


def _current_loop() -> _Loop:
    global _loop, _inherited_reactor
    loop = _loop
    pid = os.getpid()
    if loop is not None and loop.pid == pid:
        return loop
    with _lock:
        if _loop is None or _loop.pid != pid:
            # A loop of another pid, or a reactor inherited through fork, is unusable.
            inherited = _inherited_reactor or _loop is not None
            _loop = _start_fresh_loop() if inherited else _start_global_loop()
            _inherited_reactor = False
        return _loop


def in_reactor_thread() -> bool:
    """Whether the caller is the reactor thread (where blocking would deadlock)."""
    loop = _loop
    if loop is not None and loop.pid == os.getpid() and _reactor_thread is not None:
        return threading.get_ident() == _reactor_thread
    # Nothing of ours ran there yet (or this is a forked child): ask Twisted,
    # if it is loaded at all.
    threadable = sys.modules.get("twisted.python.threadable")
    return bool(threadable is not None and threadable.isInIOThread())


def check_caller() -> None:
    """Refuse to block in the reactor thread: the answer could never arrive."""
    if in_reactor_thread():
        raise RuntimeError(
            "syncsmtp blocks until the server answers, so it cannot be called from "
            "the Twisted reactor thread; call it from another thread"
        )


def run(function: Callable[..., Any], *args: Any, timeout: float, hand_over: bool = False) -> Any:
    """Call ``function(reactor, *args)`` in the reactor thread and block for its result.

    ``function`` may return a value or a Deferred. Its exception is raised
    here. When ``timeout`` seconds pass first, or the caller gets
    KeyboardInterrupt, the Deferred is cancelled in the reactor thread and
    :class:`WaitTimedOut` (or the KeyboardInterrupt) is raised.

    ``hand_over``: the work goes on after its result (a one-shot send QUITs
    and closes its connection), and the reactor thread lets the caller run
    first. In 60 fresh STARTTLS sends to Postfix the caller woke 0.11 and
    0.16 ms after the result with it, 0.36 and 0.56 ms without (medians of
    two runs). On a reused connection, with nothing left to do after the
    result, it gained nothing (five interleaved rounds of 2,000 sends).
    """
    check_caller()
    loop = _current_loop()
    call = _Call(function, args, hand_over)
    loop.submit(call)
    try:
        if not call.wait(timeout):
            _cancel(loop, call)
            raise WaitTimedOut()
    except KeyboardInterrupt:
        _cancel(loop, call)
        raise
    finally:
        loop.done(call)
    return call.outcome()


def post(function: Callable[..., Any], *args: Any) -> None:
    """Call ``function(reactor, *args)`` in the reactor thread, without waiting
    for it (calls posted from one thread run in the order they were posted)."""
    loop = _current_loop()
    loop.reactor.callFromThread(function, loop.reactor, *args)


#: How long a cancelled call may take to settle in the reactor.
_SETTLE_SECONDS = 1.0


def _cancel(loop: _Loop, call: _Call) -> None:
    """Cancel the reactor-side work and give it a moment to settle, so that
    what it holds (a connection) is released before the caller goes on."""
    loop.reactor.callFromThread(call.cancel)
    call.wait(_SETTLE_SECONDS)
