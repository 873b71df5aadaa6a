"""Policy(idle_limit=...): a send fails when the server goes quiet for that
long (nothing received, none of the data taken), whatever its whole
deadline; a slow server that keeps answering, or keeps reading a large
message, is not cut off. Against scripted socket servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from loopback import LineReader, serving

import syncsmtp

_DEADLINE = 10.0


@dataclass
class Peer:
    """How the scripted server behaves: ``quiet_at`` is where it stops
    answering and reading ("greeting", "mail", "data" after some of the
    message, "end-of-data" after all of it), ``trickle`` the pause between the
    bytes of its replies, ``slow_read`` the pause between its reads of the
    message (with a small receive buffer, so the client is held back)."""

    quiet_at: str | None = None
    trickle: float = 0.0
    slow_read: float = 0.0
    quiet_on_message: int = 1  # with quiet_at "mail": which MAIL FROM (1: the first)
    done: threading.Event = field(default_factory=threading.Event)
    received: int = 0


def _reply(connection: socket.socket, peer: Peer, text: bytes) -> None:
    if not peer.trickle:
        connection.sendall(text)
        return
    for byte in text:
        connection.sendall(bytes([byte]))
        time.sleep(peer.trickle)


def _serve(connection: socket.socket, peer: Peer) -> None:
    connection.settimeout(_DEADLINE)
    if peer.slow_read:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    if peer.quiet_at == "greeting":
        peer.done.wait(_DEADLINE)
        return
    _reply(connection, peer, b"220 idle ESMTP\r\n")
    reader = LineReader(connection)
    mails = 0
    for _ in range(100):  # a few commands per message
        line = reader.line()
        if line is None:
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"MAIL":
            mails += 1
            if peer.quiet_at == "mail" and mails == peer.quiet_on_message:
                peer.done.wait(_DEADLINE)
                return
        if verb == b"EHLO":
            _reply(connection, peer, b"250-idle\r\n250 8BITMIME\r\n")
        elif verb == b"DATA":
            _reply(connection, peer, b"354 go\r\n")
            reader.pending = _read_data(connection, peer, reader.pending)
            if peer.quiet_at in ("data", "end-of-data"):
                peer.done.wait(_DEADLINE)
                return
            _reply(connection, peer, b"250 queued\r\n")
        elif verb == b"QUIT":
            _reply(connection, peer, b"221 bye\r\n")
            return
        else:
            _reply(connection, peer, b"250 ok\r\n")


def _read_data(connection: socket.socket, peer: Peer, buffer: bytes) -> bytes:
    """Read the message up to its final dot (or, quiet at "data", only its start)."""
    tail = buffer
    for _ in range(100_000):  # bounded: a few thousand reads for the largest message here
        end = tail.find(b"\r\n.\r\n")
        if end >= 0:
            peer.received += end
            return tail[end + 5:]
        if peer.quiet_at == "data" and peer.received > 256 * 1024:
            return b""
        if peer.slow_read:
            time.sleep(peer.slow_read)
        chunk = connection.recv(16384 if peer.slow_read else 1 << 20)
        if not chunk:
            return b""
        # Keep only what could hold the start of the terminator.
        peer.received += max(0, len(tail) - 4)
        tail = tail[-4:] + chunk if len(tail) >= 4 else tail + chunk
    raise AssertionError("the message never ended")


@contextmanager
def peer_at(peer: Peer, connections: int = 1) -> Iterator[syncsmtp.Policy]:
    with serving(lambda connection: _serve(connection, peer), connections) as port:
        try:
            yield syncsmtp.Policy("127.0.0.1", port=port, tls="none")
        finally:
            peer.done.set()


def message(size: int = 0) -> bytes:
    body = b"x" * 998 + b"\r\n"
    return b"From: a@example.com\r\nTo: b@example.com\r\nSubject: idle\r\n\r\n" + body * (size // 1000)


def send(policy: syncsmtp.Policy, data: bytes, timeout: float) -> syncsmtp.SendResult:
    return syncsmtp.send(data, policy, timeout, sender="a@example.com", recipients=["b@example.com"])


# -- silence ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quiet_at", "stage", "maybe_delivered"), [
    ("greeting", "greeting", False),
    ("mail", "mail", False),
    ("end-of-data", "end-of-data", True),
])
def test_a_silent_server_fails_at_the_idle_limit(quiet_at: str, stage: str, maybe_delivered: bool) -> None:
    peer = Peer(quiet_at=quiet_at)
    with peer_at(peer) as policy, pytest.raises(syncsmtp.SendTimeout) as caught:
        send(policy.with_options(idle_limit=0.5), message(), timeout=60)
    error = caught.value
    assert error.stage == stage and error.maybe_delivered is maybe_delivered
    assert "idle_limit" in str(error) and "went quiet for 0.5 s" in str(error)
    assert error.transient and isinstance(error, TimeoutError)


def test_a_server_that_stops_reading_mid_data_fails_at_the_idle_limit() -> None:
    peer = Peer(quiet_at="data", slow_read=0.001)
    with peer_at(peer) as policy, pytest.raises(syncsmtp.SendTimeout) as caught:
        send(policy.with_options(idle_limit=0.5), message(12 * 1024 * 1024), timeout=60)
    error = caught.value
    assert error.stage == "message" and not error.maybe_delivered
    assert "idle_limit" in str(error)
    assert 0 < peer.received < 12 * 1024 * 1024


def test_the_whole_deadline_still_applies_with_its_own_words() -> None:
    peer = Peer(quiet_at="greeting")
    with peer_at(peer) as policy, pytest.raises(syncsmtp.SendTimeout) as caught:
        send(policy.with_options(idle_limit=30), message(), timeout=0.5)
    error = caught.value
    assert error.stage == "greeting"
    assert "idle_limit" not in str(error) and "deadline" in str(error)


# -- slow but moving ---------------------------------------------------------------------------------


def test_replies_that_trickle_in_are_not_silence() -> None:
    # Every reply takes longer than the limit, but a byte comes every 20 ms.
    peer = Peer(trickle=0.02)
    with peer_at(peer) as policy:
        result = send(policy.with_options(idle_limit=0.4), message(), timeout=60)
    assert result.reply.code == 250


def test_a_large_message_read_slowly_is_not_silence() -> None:
    # The server answers nothing while it reads, slowly: the writes moving keep the send alive.
    peer = Peer(slow_read=0.01)
    size = 2 * 1024 * 1024
    with peer_at(peer) as policy:
        started = time.monotonic()
        result = send(policy.with_options(idle_limit=0.5), message(size), timeout=60)
        took = time.monotonic() - started
    assert result.reply.code == 250
    assert peer.received >= size - 4096
    if took < 0.5:  # the link was not slow after all: the test shows nothing
        pytest.skip(f"the transfer took {took:.2f} s, less than the idle limit")


# -- on a Mailer's reused connection ---------------------------------------------------------------------


def test_a_pooled_connection_waits_between_messages_but_not_in_one() -> None:
    peer = Peer(quiet_at="mail", quiet_on_message=2)
    with peer_at(peer) as policy, syncsmtp.Mailer(policy.with_options(idle_limit=0.3)) as mailer:
        first = mailer.send(message(), sender="a@example.com", recipients=["b@example.com"])
        time.sleep(0.8)  # longer than the limit, between messages: not an error
        with pytest.raises(syncsmtp.SendTimeout) as caught:
            mailer.send(message(), timeout=60, sender="a@example.com", recipients=["b@example.com"])
    assert first.reply.code == 250
    error = caught.value
    assert error.stage == "mail" and not error.maybe_delivered and "idle_limit" in str(error)


# -- the policy field --------------------------------------------------------------------------------


def test_idle_limit_is_a_policy_field_and_a_url_option() -> None:
    assert syncsmtp.Policy("h").idle_limit is None
    assert syncsmtp.Policy("h", idle_limit=5).idle_limit == 5.0
    policy = syncsmtp.Policy.from_url("smtp+plain://h:25?idle_limit=2.5")
    assert policy.idle_limit == 2.5 and "idle_limit=2.5" in repr(policy)
    for wrong in (0, -1, float("inf"), float("nan"), "3", True):
        with pytest.raises(ValueError, match="Policy idle_limit must be a positive, finite number"):
            syncsmtp.Policy("h", idle_limit=wrong)
    with pytest.raises(ValueError, match="url option idle_limit must be a number of seconds, not 'soon'"):
        syncsmtp.Policy.from_url("smtp://h?idle_limit=soon")
