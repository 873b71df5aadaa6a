"""syncsmtp.testing.SMTPTestServer itself: what it refuses, where it listens, its
constructor, AUTH, stopping, and the sink that ``syncsmtp serve`` runs.

Every server here listens on 127.0.0.1; non-loopback addresses are only
given to the constructor (which refuses them before anything is bound).
"""

from __future__ import annotations

import ast
import base64
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import ReceivedMessage, SMTPTestServer
from syncsmtp.testing._sink import SinkServer

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


# -- the constructor ---------------------------------------------------------------------------


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SMTPTestServer("none")  # type: ignore[call-arg]


@pytest.mark.parametrize("option", ["accept_any_credentials", "on_message"])
def test_sink_options_are_not_test_server_options(option: str) -> None:
    """What only ``syncsmtp serve`` needs is not in the public constructor."""
    options: dict[str, Any] = {option: True}
    with pytest.raises(TypeError, match=option):
        SMTPTestServer(**options)


def test_settings_apply_to_connections_opened_after_a_change(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none")
    before = raw_client(server.port)
    server.require_auth = True
    server.extensions = ("SIZE 1000",)
    after = raw_client(server.port)
    assert before.command(b"EHLO client.example").startswith(b"250 ")
    assert before.command(b"MAIL FROM:<a@example.com> SIZE=5000").startswith(b"250 ")
    assert after.command(b"EHLO client.example") == b"250 SIZE 1000\r\n"
    assert after.command(b"MAIL FROM:<a@example.com>").startswith(b"530 5.7.0 ")


# -- AUTH ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response", [b"user\0password", b"\0\0password", b"a\0user\0password\0", b"no separator"],
    ids=["two-parts", "empty-user", "four-parts", "one-part"],
)
def test_a_malformed_auth_plain_response_is_501(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient], response: bytes
) -> None:
    server = smtp_server_factory(tls="none", users={"user": "password"}, auth_requires_tls=False)
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    assert client.command(b"AUTH PLAIN " + base64.b64encode(response)).startswith(b"501 5.5.2 ")
    # The session goes on, and a well-formed response (an authorization identity too) is taken.
    good = base64.b64encode(b"admin\0user\0password")
    assert client.command(b"AUTH PLAIN " + good).startswith(b"235 ")


def test_wrong_auth_plain_password_is_535(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none", users={"user": "password"}, auth_requires_tls=False)
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    assert client.command(b"AUTH PLAIN " + base64.b64encode(b"\0user\0wrong")).startswith(b"535 5.7.8 ")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_each_auth_mechanism_logs_in(smtp_server: SMTPTestServer, mechanism: str) -> None:
    syncsmtp.send(b"Subject: x\r\n\r\nx\r\n", smtp_server.policy(auth_mechanisms=(mechanism,)),
                  timeout=20, sender="a@example.com", recipients=["b@example.com"])
    [received] = smtp_server.wait_for(1)
    assert received.auth_user == "user" and received.tls


def test_the_test_server_imports_no_private_twisted_module() -> None:
    """Twisted's private modules (``twisted.mail._cred`` ...) change without notice."""
    folder = Path(syncsmtp.__file__).parent / "testing"
    private = []
    for source in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            private += [f"{source.name}: {name}" for name in names
                        if name.startswith("twisted") and any(p.startswith("_") for p in name.split("."))]
    assert private == []


# -- the sink that ``syncsmtp serve`` runs --------------------------------------------------------


def test_sink_takes_any_credentials_and_hands_each_message_on() -> None:
    handed: list[ReceivedMessage] = []
    with SinkServer(tls="none", auth_requires_tls=False, accept_any_credentials=True,
                    on_message=handed.append) as sink:
        assert sink.accept_any_credentials
        policy = sink.policy(username="anyone", password="anything", allow_plaintext_auth=True)
        syncsmtp.send(b"Subject: x\r\n\r\nx\r\n", policy, timeout=20,
                      sender="a@example.com", recipients=["b@example.com"])
        [received] = sink.wait_for(1)
    assert handed == [received] and received.auth_user == "anyone"


def test_sink_keeps_a_message_whose_callback_failed() -> None:
    def broken(message: ReceivedMessage) -> None:
        raise RuntimeError("the callback's own bug")

    with SinkServer(tls="none", on_message=broken) as sink:
        result = syncsmtp.send(b"Subject: x\r\n\r\nx\r\n", sink.policy(), timeout=20,
                               sender="a@example.com", recipients=["b@example.com"])
        assert result.reply.code == 250
        assert len(sink.wait_for(1)) == 1


def test_a_plain_test_server_refuses_unknown_credentials(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(syncsmtp.AuthDeclinedError):
        syncsmtp.send(b"Subject: x\r\n\r\nx\r\n", smtp_server.policy(username="anyone", password="x"),
                      timeout=20, sender="a@example.com", recipients=["b@example.com"])
    assert smtp_server.outbox == []


# -- stopping -----------------------------------------------------------------------------------


def test_stop_with_grace_lets_an_open_connection_finish(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 60.0})
    stopper.start()
    try:
        # Still served while stop() waits: the client finishes its transaction and quits.
        assert client.command(b"MAIL FROM:<a@example.com>").startswith(b"250 ")
        assert client.command(b"RCPT TO:<b@example.com>").startswith(b"250 ")
        assert client.command(b"DATA").startswith(b"354 ")
        assert client.command(b"Subject: x\r\n\r\nx\r\n.").startswith(b"250 ")
        assert client.command(b"QUIT").startswith(b"221 ")
    finally:
        stopper.join(_READ_TIMEOUT * 3)
    assert not stopper.is_alive()
    assert len(server.outbox) == 1


def test_stop_with_grace_drops_what_is_still_open_after_it(
    smtp_server_factory: ServerFactory, raw_client: Callable[[int], RawClient]
) -> None:
    server = smtp_server_factory(tls="none")
    client = raw_client(server.port)
    assert client.command(b"EHLO client.example").startswith(b"250 ")
    server.stop(grace=0.2)
    try:
        left = client.file.readline(4096)  # closed by the server ...
    except ConnectionResetError:
        left = b""  # ... or reset, as abortConnection() may; an open one times out
    assert left == b""
