"""A pool's sessions by state (reactor side): idle, busy, busy with room for
another message behind its own (PIPELINING), and how many are being set up.
Which session a message goes to, and when to open another, is the pool's
(:mod:`syncsmtp._pool`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._engine import SMTPClientProtocol

__all__ = ["PoolSessions"]


@dataclass(eq=False)
class PoolSessions:
    """Every session of one pool, and which of them can take a message now."""

    reactor: Any
    idle_timeout: float
    #: Every session, from its connection attempt until it is closed.
    all: set[SMTPClientProtocol] = field(default_factory=set)
    idle: list[SMTPClientProtocol] = field(default_factory=list)
    busy: set[SMTPClientProtocol] = field(default_factory=set)
    #: How many sessions are still being set up.
    connecting: int = 0
    # Busy sessions that said they had room for another message (PIPELINING),
    # most recent last; one may have filled up since, and is checked when
    # taken. Scanning every busy session instead cost a quarter of the
    # reactor's calls a message in send_many over 8 connections.
    _roomy: list[SMTPClientProtocol] = field(default_factory=list)
    # When each idle session was parked, and the one timer that quits those
    # idle for idle_timeout (a timer per park and a cancel per reuse cost a
    # reused send more than this does).
    _idle_since: dict[SMTPClientProtocol, float] = field(default_factory=dict)
    _reaper: Any = None

    @property
    def total(self) -> int:
        """Sessions set up or being set up."""
        return len(self.all)

    @property
    def up(self) -> int:
        """Sessions set up (and not closed yet)."""
        return len(self.all) - self.connecting

    def take_idle(self) -> SMTPClientProtocol | None:
        while self.idle:
            session = self.idle.pop()  # most recently used: least likely to have timed out
            self._idle_since.pop(session, None)
            if session.idle:
                return session
        return None

    def take_with_room(self) -> SMTPClientProtocol | None:
        """A busy session that can take the next message behind its current ones (PIPELINING)."""
        roomy = self._roomy
        while roomy:
            session = roomy[-1]
            if session.can_take and session in self.busy:
                return session  # kept: it may have room for more after this one
            roomy.pop()
        return None

    def remember_room(self, session: SMTPClientProtocol) -> None:
        if session not in self._roomy:
            self._roomy.append(session)

    def park(self, session: SMTPClientProtocol) -> None:
        self.idle.append(session)
        self._idle_since[session] = float(self.reactor.seconds())
        if self._reaper is None or not self._reaper.active():
            self._reaper = self.reactor.callLater(self.idle_timeout, self._expire_idle)

    def _expire_idle(self) -> None:
        """QUIT the sessions idle for ``idle_timeout``; come back for the next one."""
        now = float(self.reactor.seconds())
        for session, since in list(self._idle_since.items()):
            if now - since >= self.idle_timeout:
                del self._idle_since[session]
                self.idle.remove(session)
                session.quit()
        if self._idle_since:
            first = min(self._idle_since.values())
            self._reaper = self.reactor.callLater(max(0.0, first + self.idle_timeout - now),
                                                  self._expire_idle)

    def forget(self, session: SMTPClientProtocol) -> None:
        """``session`` is closed: it is in no state any more."""
        self.all.discard(session)
        self.busy.discard(session)
        if session in self._roomy:
            self._roomy.remove(session)
        if session in self.idle:
            self.idle.remove(session)
        self._idle_since.pop(session, None)

    def stop_reaper(self) -> None:
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()

    @property
    def counts(self) -> dict[str, int]:
        """How many sessions are idle, busy and connecting."""
        return {"idle": len(self.idle), "busy": len(self.busy), "connecting": self.connecting}
