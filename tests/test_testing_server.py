"""syncsmtp.testing.SMTPTestServer itself: what it refuses, and where it listens.

Every server here listens on 127.0.0.1; non-loopback addresses are only
given to the constructor (which refuses them before anything is bound).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
# Bounds for the raw client: seconds per read, lines per reply.
_READ_TIMEOUT = 10.0
_MAX_REPLY_LINES = 50
# Given to the constructor only, which refuses it (or, with the opt-in, is never started).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


class RawClient:
    """Writes exact bytes to the server and reads its replies (bounded in time and lines)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=_READ_TIMEOUT)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220 ")

    def reply(self) -> bytes:
        """The last line of the next reply (a multi-line reply read to its end)."""
        for _ in range(_MAX_REPLY_LINES):
            line = self.file.readline(4096)
            if not line:
                raise AssertionError("the server closed the connection")
            if line[3:4] != b"-":
                return line
        raise AssertionError(f"no end of reply within {_MAX_REPLY_LINES} lines")

    def command(self, line: bytes) -> bytes:
        """Write ``line`` (CRLF added) exactly as given; the reply's last line."""
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw_client() -> Iterator[Callable[[int], RawClient]]:
    opened: list[RawClient] = []

    def connect(port: int) -> RawClient:
        opened.append(RawClient(port))
        return opened[-1]

    yield connect
    for client in opened:
        client.close()


# Each path holds a control character inside the address, as the bytes on the wire
# (a lone LF survives Twisted's line splitting, which splits on CRLF only).
_BAD_PATHS = [
    pytest.param(b'<"a\nX-Injected: forged"@example.com>', id="quoted-LF"),
    pytest.param(b'<"a\rX-Injected: forged"@example.com>', id="quoted-CR"),
    pytest.param(b'<"\x1b[2J"@example.com>', id="quoted-ESC"),
    pytest.param(b"<a\\\x1b@example.com>", id="escaped-ESC"),
    pytest.param(b'<"a\x00b"@example.com>', id="quoted-NUL"),
    pytest.param(b'<"a\tb"@example.com>', id="quoted-TAB"),
    pytest.param(b'<"a\x7fb"@example.com>', id="quoted-DEL"),
]


@pytest.mark.parametrize("path", _BAD_PATHS)
def test_control_characters_in_the_sender_are_refused(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient], path: bytes
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    reply = client.command(b"MAIL FROM:" + path)
    assert reply.startswith(b"501 5.1.7 "), reply
    # The session goes on: a good transaction on the same connection is taken.
    assert client.command(b"MAIL FROM:<ann@example.com>").startswith(b"250 ")
    assert client.command(b"RCPT TO:<bob@example.com>").startswith(b"250 ")
    assert client.command(b"DATA").startswith(b"354 ")
    assert client.command(b"Subject: ok\r\n\r\nbody\r\n.").startswith(b"250 ")
    [received] = server.wait_for(1)
    assert received.sender == "ann@example.com"
    assert b"X-Injected" not in received.data


@pytest.mark.parametrize("path", _BAD_PATHS)
def test_control_characters_in_a_recipient_are_refused(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient], path: bytes
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    assert client.command(b"MAIL FROM:<ann@example.com>").startswith(b"250 ")
    reply = client.command(b"RCPT TO:" + path)
    assert reply.startswith(b"501 5.1.3 "), reply
    assert client.command(b"RCPT TO:<bob@example.com>").startswith(b"250 ")
    assert client.command(b"DATA").startswith(b"354 ")
    assert client.command(b"Subject: ok\r\n\r\nbody\r\n.").startswith(b"250 ")
    assert server.wait_for(1)[0].recipients == ("bob@example.com",)


def test_control_characters_in_mail_parameters_are_refused(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    assert client.command(b"MAIL FROM:<ann@example.com> SIZE=10\x1b[2J").startswith(b"501 5.5.4 ")
    assert client.command(b"MAIL FROM:<ann@example.com> SIZE=10").startswith(b"250 ")
    assert client.command(b"RCPT TO:<bob@example.com> X=\x1b").startswith(b"501 5.5.4 ")


def test_quoted_local_parts_without_control_characters_still_pass(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    assert client.command(b'MAIL FROM:<"john doe"@example.com>').startswith(b"250 ")
    assert client.command(b'RCPT TO:<"jane q."@example.com>').startswith(b"250 ")
    assert client.command(b"DATA").startswith(b"354 ")
    assert client.command(b"Subject: ok\r\n\r\nbody\r\n.").startswith(b"250 ")
    [received] = server.wait_for(1)
    assert received.sender == '"john doe"@example.com'
    assert received.recipients == ('"jane q."@example.com',)


# -- where it listens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", [ALL_INTERFACES, "::", "", "192.0.2.1", "10.0.0.1", "fe80::1", "::ffff:127.0.0.1",
             "127.1", "example.com", "localhost.example.com", " 127.0.0.1"],
)
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match=r"loopback.*allow_non_loopback=True"):
        SMTPTestServer(tls="none", host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "localhost"])
def test_loopback_hosts_are_taken(host: str) -> None:
    server = SMTPTestServer(tls="none", host=host)
    assert server.host == host and not server.allow_non_loopback


def test_non_loopback_host_with_the_opt_in() -> None:
    # Only constructed: a test never binds a public interface.
    server = SMTPTestServer(tls="none", host=ALL_INTERFACES, allow_non_loopback=True)
    assert server.host == ALL_INTERFACES and server.allow_non_loopback


def test_opt_in_on_loopback_serves(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", host="127.0.0.1", allow_non_loopback=True)
    syncsmtp.send(b"Subject: x\r\n\r\nx\r\n", server.policy(), timeout=20,
                  sender="a@example.com", recipients=["b@example.com"])
    assert server.wait_for(1)[0].recipients == ("b@example.com",)


def test_host_changed_before_start_is_checked_again() -> None:
    server = SMTPTestServer(tls="none")
    server.host = ALL_INTERFACES
    try:
        with pytest.raises(ValueError, match="loopback"):
            server.start()
    finally:
        server.stop()
