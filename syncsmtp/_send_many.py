"""The caller's side of :meth:`Mailer.send_many <syncsmtp.Mailer.send_many>`:
what an item of its input may be (:class:`Outgoing`), turning items into
envelopes, and waiting for a batch's outcomes (the reactor side is
:mod:`syncsmtp._batch`). No Twisted is imported here.
"""

from __future__ import annotations

import email.message
import threading
import time
from collections.abc import Iterable, Sized
from typing import Any, NamedTuple, cast

from . import _messages, _reactor
from .dkim import DKIM
from .dsn import DSN, check_options, with_options
from .errors import MessageError
from .message import Envelope, MessageInput, prepare_message
from .result import SendResult

__all__ = ["Outgoing"]

_MESSAGE_TYPES = (email.message.Message, bytes, bytearray, memoryview, str)


class Outgoing(NamedTuple):
    """One message for :meth:`Mailer.send_many <syncsmtp.Mailer.send_many>`
    with its envelope given, as :func:`syncsmtp.send` takes it with
    ``sender=`` and ``recipients=``.

    ``message`` is an :class:`email.message.EmailMessage`, ``bytes`` or
    ``str``. For ``bytes`` and ``str``, ``sender`` and ``recipients`` are
    required; for an EmailMessage they override what its headers say (None:
    from the headers). Any ``(message, sender, recipients)`` tuple is taken
    the same way.

    ``dsn`` and ``require_tls`` are this message's delivery options, as
    ``send()`` takes them (see :doc:`delivery-options`); None (the default):
    those given to ``send_many`` for the whole batch. A bad one makes this
    message's outcome a :class:`~syncsmtp.MessageError`, not the batch's.
    """

    message: MessageInput
    sender: str | None = None
    recipients: Iterable[str] | str | None = None
    dsn: DSN | None = None
    require_tls: bool | None = None


def check_messages(messages: object) -> Iterable[Any]:
    """``messages`` as given, when it is an iterable of items; a TypeError
    naming it when it is one message (whose iteration would yield header
    names, bytes or characters) or no iterable at all."""
    where = "Mailer.send_many()"
    if isinstance(messages, (*_MESSAGE_TYPES, Outgoing)) or not isinstance(messages, Iterable):
        raise TypeError(_messages.messages_not_iterable(where, messages))
    return messages


def prepare_item(item: object, dkim: DKIM | None = None, dsn: DSN | None = None,
                 require_tls: bool = False) -> Envelope:
    """The envelope of one item of ``send_many``'s input, signed with ``dkim``
    when given, with the batch's ``dsn`` and ``require_tls`` unless the item
    (an :class:`Outgoing`) has its own; MessageError when it is unusable."""
    if isinstance(item, Outgoing):
        dsn = dsn if item.dsn is None else item.dsn
        require_tls = require_tls if item.require_tls is None else item.require_tls
        try:
            check_options("Outgoing", dsn, require_tls)
        except TypeError as error:
            raise MessageError(str(error)) from None
        item = item[:3]
    if isinstance(item, tuple):
        if len(item) != 3:
            raise MessageError(_messages.batch_item(item))
        message, sender, recipients = item
    elif isinstance(item, _MESSAGE_TYPES):
        message, sender, recipients = item, None, None
    else:
        raise MessageError(_messages.batch_item(item))
    # bytearray and memoryview are taken too.
    envelope = prepare_message(cast(MessageInput, message), sender=sender, recipients=recipients, dkim=dkim)
    return with_options(envelope, cast(MessageInput, message), dsn, require_tls)


def _set_target(reactor: Any, outcomes: Outcomes, target: int) -> None:
    outcomes.set_target(target)


class Outcomes:
    """Where the reactor thread leaves each message's outcome of a batch.

    The caller waits for a count of outcomes (a target) and is woken once,
    when it is reached, not once per message: a thread switch per message
    would cost more than the rest of its work.
    """

    def __init__(self, results: list[SendResult | Exception | None]) -> None:
        self._results = results
        self.count = 0
        self._target: int | None = None
        self._reached = threading.Lock()
        self._reached.acquire()

    # Reactor thread: the only one that releases the lock.

    def put(self, index: int, outcome: SendResult | Exception) -> None:
        """Record one message's outcome (reactor thread)."""
        self._results[index] = outcome
        self.count += 1
        if self._target is not None and self.count >= self._target:
            self._wake()

    def set_target(self, target: int) -> None:
        """Wake the caller once ``target`` outcomes are in (reactor thread)."""
        self._target = target
        if self.count >= target:
            self._wake()

    def _wake(self) -> None:
        self._target = None
        if self._reached.locked():
            self._reached.release()

    # The caller's thread.

    def wait(self, seconds: float) -> bool:
        """Whether the target is reached, waiting up to ``seconds`` for it."""
        return self._reached.acquire(timeout=seconds)


class Watch:
    """The caller's side of a batch: waits for outcomes, moves the progress
    bar, and notices a batch that went quiet for longer than any message can.

    ``bar_seconds`` is how often the bar moves; ``check_seconds`` how often,
    without a bar, the batch is looked at to notice it went quiet."""

    def __init__(self, outcomes: Outcomes, bar: Any, quiet_limit: float, *,
                 bar_seconds: float, check_seconds: float) -> None:
        self._outcomes = outcomes
        self._bar = bar
        self._quiet_limit = quiet_limit
        self._interval = bar_seconds if bar is not None else check_seconds
        self._shown = 0
        self.refused_early = 0  # messages that failed preparation, never sent

    def until(self, target: int) -> bool:
        """Wait until ``target`` outcomes are in; False when the batch went quiet first."""
        outcomes = self._outcomes
        _reactor.post(_set_target, outcomes, target)
        heard, last_heard = outcomes.count, time.monotonic()
        while not outcomes.wait(self._interval):
            self._show()
            now, count = time.monotonic(), outcomes.count
            if count != heard:
                heard, last_heard = count, now
            elif now - last_heard > self._quiet_limit:
                return False
        self._show()
        return True

    def _show(self) -> None:
        if self._bar is not None:
            done = self._outcomes.count + self.refused_early
            self._bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        """Bring the bar up to date and close it."""
        if self._bar is not None:
            self._show()
            self._bar.close()


def progress_bar(wanted: bool, messages: Iterable[Any]) -> Any:
    """A tqdm bar (the notebook one in Jupyter) when asked for and installed."""
    if not wanted:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=len(messages) if isinstance(messages, Sized) else None, unit="msg")
