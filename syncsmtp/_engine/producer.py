"""Writing a large message as the transport drains (reactor side)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

__all__ = ["DataProducer"]


@implementer(IPullProducer)
class DataProducer:
    """Writes the framed message chunk by chunk as the transport drains, so a
    large message is never copied whole into the transport's buffer.

    It looks one chunk ahead, so that ``finished`` runs as soon as the last
    chunk (with the terminator) is handed over: from then on the server may
    have the whole message, and a failure must say so. ``writing`` runs before
    each chunk is written, with whether it is the last (a BDAT chunk's reply
    is then expected). ``moved`` runs each time the consumer asks for more:
    it took what it had (the idle limit counts from then).
    """

    def __init__(self, consumer: Any, chunks: Iterator[bytes], writing: Callable[[bool], None],
                 finished: Callable[[], None], moved: Callable[[], None] = lambda: None) -> None:
        self._consumer = consumer
        self._moved = moved
        self._chunks = chunks
        self._writing = writing
        self._finished = finished
        self._next: bytes | None = None
        self._stopped = False

    def start(self) -> None:
        self._next = next(self._chunks)
        self._consumer.registerProducer(self, False)

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted interface)
        if self._stopped or self._next is None:
            return
        self._moved()
        chunk, self._next = self._next, next(self._chunks, None)
        self._writing(self._next is None)
        self._consumer.write(chunk)
        if self._next is None:
            self._stopped = True
            self._consumer.unregisterProducer()
            self._finished()

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True
