"""syncsmtp.send() against the project's test server: happy paths and every error."""

from __future__ import annotations

import base64
import email.message
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
MARGIN = 3.0  # what a deadline may be overrun by on a loaded machine


def make_message(to: str = "bob@example.com", body: str = "hello\n") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = to
    message["Subject"] = "test"
    message.set_content(body)
    return message


def assert_clean_wire(raw: bytes) -> None:
    assert re.search(rb"\r(?!\n)", raw) is None, "bare CR reached the wire"
    assert re.search(rb"(?<!\r)\n", raw) is None, "bare LF reached the wire"
    assert raw.endswith(b"\r\n.\r\n") or raw == b".\r\n"


# -- happy paths ----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_starttls_and_each_auth_mechanism(smtp_server: SMTPTestServer, mechanism: str) -> None:
    policy = smtp_server.policy(auth_mechanisms=(mechanism,))
    message = make_message()
    result = syncsmtp.send(message, policy, timeout=20)
    assert result.accepted == ("bob@example.com",)
    assert dict(result.refused) == {}
    assert result.reply.code == 250
    assert result.auth_mechanism == mechanism
    assert result.tls is not None and result.tls.version.startswith("TLS")
    received = smtp_server.wait_for(1)[0]
    assert received.tls and received.auth_user == "user"
    assert received.sender == "ann@example.com"
    assert received.recipients == ("bob@example.com",)
    assert received.message["Message-ID"] == result.message_id
    assert received.message.get_content() == "hello\r\n"
    password = policy.password or ""
    transcript = "\n".join(result.transcript)
    assert password not in transcript
    assert base64.b64encode(password.encode()).decode() not in transcript
    assert "<redacted>" in transcript


def test_implicit_tls(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="implicit", users={"user": "password"})
    result = syncsmtp.send(make_message(), server.policy(), timeout=20)
    assert result.tls is not None
    assert server.wait_for(1)[0].tls


def test_plaintext_local_relay(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    result = syncsmtp.send(make_message(), server.policy(tls="none"), timeout=20)
    assert result.tls is None and result.auth_mechanism is None
    assert not server.wait_for(1)[0].tls


def test_opportunistic_goes_plain_without_starttls(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    result = syncsmtp.send(make_message(), server.policy(tls="opportunistic"), timeout=20)
    assert result.tls is None


def test_ipv6_loopback(smtp_server_factory: ServerFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = smtp_server_factory(host="::1")
    except Exception as exc:  # an environment without ::1
        pytest.skip(f"cannot listen on ::1: {exc}")
    syncsmtp.send(make_message(), server.policy(), timeout=20)
    assert server.wait_for(1)


@pytest.mark.parametrize("pipelining", [True, False])
def test_some_recipients_refused(smtp_server_factory: ServerFactory, pipelining: bool) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.refuse_recipient("gone@example.com", 550, "5.1.1 No such user")
    server.refuse_recipient("full@example.com", 452, "4.2.2 Mailbox full")
    result = syncsmtp.send(
        make_message(to="a@example.com, gone@example.com, b@example.com, full@example.com"),
        server.policy(),
        timeout=20,
    )
    assert result.accepted == ("a@example.com", "b@example.com")
    assert {k: (v.code, v.enhanced) for k, v in result.refused.items()} == {
        "gone@example.com": (550, "5.1.1"),
        "full@example.com": (452, "4.2.2"),
    }
    assert server.wait_for(1)[0].recipients == ("a@example.com", "b@example.com")


def test_several_sends_and_bcc(smtp_server: SMTPTestServer) -> None:
    message = make_message()
    message["Bcc"] = "secret@example.com"
    for _ in range(3):
        syncsmtp.send(message, smtp_server.policy(), timeout=20)
    received = smtp_server.wait_for(3)
    assert all(r.recipients == ("bob@example.com", "secret@example.com") for r in received)
    assert all(b"secret@example.com" not in r.data for r in received)


# -- byte-exact delivery -------------------------------------------------------------


AWKWARD = {
    "crlf": (b"Subject: a\r\n\r\none\r\ntwo\r\n", b"Subject: a\r\n\r\none\r\ntwo\r\n"),
    "lf": (b"Subject: a\n\none\ntwo\n", b"Subject: a\r\n\r\none\r\ntwo\r\n"),
    "bare-cr": (b"Subject: a\r\rone\rtwo", b"Subject: a\r\n\r\none\r\ntwo\r\n"),
    "mixed": (b"Subject: a\r\n\nx\ry\r\n", b"Subject: a\r\n\r\nx\r\ny\r\n"),
    "dots": (b".first\n..second\n.\nlast.\n", b".first\r\n..second\r\n.\r\nlast.\r\n"),
    "smuggling": (
        b"Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<evil@example.com>\r\n",
        b"Subject: a\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@example.com>\r\n",
    ),
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_input_arrives_exactly(smtp_server: SMTPTestServer, name: str) -> None:
    data, expected = AWKWARD[name]
    syncsmtp.send(data, smtp_server.policy(), timeout=20, sender="a@example.com",
                  recipients=["b@example.com"])
    received = smtp_server.wait_for(1)[0]
    assert received.data == expected
    assert_clean_wire(received.raw)
    assert len(smtp_server.outbox) == 1, "smuggled data must not become a second message"


def test_dots_at_16k_chunk_boundaries(smtp_server: SMTPTestServer) -> None:
    line = b"x" * (16 * 1024 - 1) + b"\n"
    data = b"Subject: big\n\n" + (line + b".dot after a boundary\n") * 8 + b".\n"
    syncsmtp.send(data, smtp_server.policy(), timeout=30, sender="a@example.com",
                  recipients=["b@example.com"])
    received = smtp_server.wait_for(1)[0]
    assert received.data == data.replace(b"\n", b"\r\n")
    assert_clean_wire(received.raw)


def test_ten_mib_message(smtp_server: SMTPTestServer) -> None:
    body = ("0123456789abcdef" * 4 + "\n") * (10 * 1024 * 1024 // 65)
    message = make_message(body=body)
    syncsmtp.send(message, smtp_server.policy(), timeout=60)
    received = smtp_server.wait_for(1, timeout=30)[0]
    assert len(received.data) > 10 * 1024 * 1024 - 4096
    assert received.message.get_content().replace("\r\n", "\n") == body


# -- failures, one per exception class -------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_error_refused() -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", port=closed_port(), tls="none")
    with pytest.raises(syncsmtp.ConnectError) as caught:
        syncsmtp.send(make_message(), policy, timeout=10)
    assert caught.value.stage == "connect" and caught.value.transient
    assert isinstance(caught.value, ConnectionError)


def test_connect_error_greeting_refused(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("greeting", 554, "5.3.2 go away")
    with pytest.raises(syncsmtp.ConnectError) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert caught.value.reply is not None and caught.value.reply.code == 554
    assert not caught.value.transient


STALL_STAGES = ["greeting", "ehlo", "starttls", "tls-handshake", "auth", "mail", "rcpt", "data",
                "end-of-data"]


@pytest.mark.parametrize("stage", STALL_STAGES)
def test_send_timeout_at_each_stage(smtp_server: SMTPTestServer, stage: str) -> None:
    smtp_server.stall(stage)
    timeout = 1.5
    started = time.monotonic()
    with pytest.raises(syncsmtp.SendTimeout) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=timeout)
    elapsed = time.monotonic() - started
    assert timeout - 0.1 <= elapsed < timeout + MARGIN
    assert caught.value.stage == {"tls-handshake": "starttls"}.get(stage, stage)
    assert caught.value.maybe_delivered is (stage == "end-of-data")
    assert isinstance(caught.value, TimeoutError)


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data"])
def test_connection_lost_before_the_data(smtp_server: SMTPTestServer, stage: str) -> None:
    smtp_server.drop(stage)
    with pytest.raises(syncsmtp.ConnectionLostError) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert not caught.value.maybe_delivered
    assert smtp_server.outbox == []


def test_connection_lost_after_the_dot_is_never_retried(smtp_server: SMTPTestServer) -> None:
    """Stock SMTPSenderFactory would reconnect and deliver the message again."""
    smtp_server.drop("end-of-data")
    with pytest.raises(syncsmtp.ConnectionLostError) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert caught.value.maybe_delivered
    time.sleep(0.5)  # room for a (wrong) retry to show up
    assert len(smtp_server.outbox) == 1
    assert smtp_server.connections == 1


class ScriptedPeer:
    """A loopback peer that answers with fixed bytes (for replies no SMTP server sends)."""

    def __init__(self, replies: list[bytes]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = int(self._listener.getsockname()[1])
        self._replies = replies
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(5)
            for reply in self._replies:
                connection.sendall(reply)
                try:
                    if not connection.recv(4096):
                        return
                except OSError:
                    return

    def close(self) -> None:
        self._listener.close()
        self._thread.join(10)


def test_protocol_error_on_garbage_reply() -> None:
    peer = ScriptedPeer([b"220 hello\r\n", b"this is not smtp\r\n"])
    try:
        with pytest.raises(syncsmtp.ProtocolError):
            syncsmtp.send(make_message(), syncsmtp.Policy(host="127.0.0.1", port=peer.port, tls="none"),
                          timeout=10)
    finally:
        peer.close()


def test_ehlo_required(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(ehlo=False)
    with pytest.raises(syncsmtp.EHLORequiredError):
        syncsmtp.send(make_message(), server.policy(), timeout=10)
    plain = smtp_server_factory(ehlo=False, tls="none", users=None)
    with pytest.raises(syncsmtp.EHLORequiredError, match="helo_fallback"):
        syncsmtp.send(make_message(), plain.policy(tls="none"), timeout=10)
    result = syncsmtp.send(make_message(), plain.policy(tls="none", helo_fallback=True), timeout=10)
    assert result.reply.code == 250
    assert "C: HELO" in "\n".join(result.transcript)


def test_tls_required(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    with pytest.raises(syncsmtp.TLSRequiredError, match="does not offer STARTTLS"):
        syncsmtp.send(make_message(), server.policy(tls="starttls"), timeout=10)
    assert server.outbox == []


def test_no_credentials_over_plaintext(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users={"user": "password"}, auth_requires_tls=False)
    policy = server.policy(tls="opportunistic", username="user", password="password")
    with pytest.raises(syncsmtp.TLSRequiredError, match="plaintext"):
        syncsmtp.send(make_message(), policy, timeout=10)
    assert not any(line.upper().startswith(b"AUTH") for conn in server.commands for line in conn)
    allowed = server.policy(tls="none", username="user", password="password",
                            allow_plaintext_auth=True)
    assert syncsmtp.send(make_message(), allowed, timeout=10).auth_mechanism is not None


def test_starttls_injection_is_refused(smtp_server: SMTPTestServer) -> None:
    smtp_server.inject_after_starttls(b"250-INJECTED\r\n250 AUTH PLAIN\r\n")
    with pytest.raises(syncsmtp.TLSFailedError, match="CVE-2011-0411"):
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert smtp_server.outbox == []


@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x07", "\x0e", "\x7f\x1f"])
def test_control_characters_in_headers_are_refused_before_connecting(
    smtp_server: SMTPTestServer, bad: str
) -> None:
    message = make_message()
    message.replace_header("Subject", f"Invoice{bad}<script>")
    with pytest.raises(syncsmtp.MessageError, match="control character"):
        syncsmtp.send(message, smtp_server.policy(), timeout=10)
    raw = b"From: a@example.com\r\nSubject: Invoice" + bad.encode() + b"\r\n\r\nbody\r\n"
    with pytest.raises(syncsmtp.MessageError, match="'Subject'"):
        syncsmtp.send(raw, smtp_server.policy(), timeout=10, sender="a@example.com",
                      recipients=["b@example.com"])
    assert smtp_server.commands == []  # refused before any connection
    # TAB may stand in a header, and control characters in the body are the body's business.
    message.replace_header("Subject", "Invoice\tdue")
    syncsmtp.send(message, smtp_server.policy(), timeout=10)
    syncsmtp.send(b"Subject: ok\r\n\r\nbody \x00 with NUL\r\n", smtp_server.policy(), timeout=10,
                  sender="a@example.com", recipients=["b@example.com"])
    assert len(smtp_server.outbox) == 2


def test_starttls_refused(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("starttls", 454, "4.7.0 TLS not available due to local problem")
    with pytest.raises(syncsmtp.TLSFailedError) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert caught.value.reply is not None and caught.value.transient
    # Opportunistic TLS goes on in plaintext (and so sends no credentials).
    result = syncsmtp.send(make_message(), smtp_server.policy(tls="opportunistic", username=None,
                                                              password=None), timeout=10)
    assert result.tls is None


def test_certificate_not_trusted(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(syncsmtp.CertificateError, match="ca_file"):
        syncsmtp.send(make_message(), smtp_server.policy(ca_file=None), timeout=10)
    assert smtp_server.outbox == []


def test_certificate_for_another_name(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(host="127.0.0.2")  # the certificate names 127.0.0.1, not .2
    with pytest.raises(syncsmtp.CertificateError):
        syncsmtp.send(make_message(), server.policy(), timeout=10)


def test_verify_false_still_encrypts(smtp_server: SMTPTestServer) -> None:
    result = syncsmtp.send(make_message(), smtp_server.policy(ca_file=None, verify=False), timeout=10)
    assert result.tls is not None


def test_implicit_tls_against_a_plain_server(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    with pytest.raises(syncsmtp.TLSError):
        syncsmtp.send(make_message(), server.policy(tls="implicit"), timeout=10)


def test_auth_required(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users=None)
    with pytest.raises(syncsmtp.AuthRequiredError, match="offers no mechanism"):
        syncsmtp.send(make_message(), server.policy(username="u", password="p"), timeout=10)
    only_plain = smtp_server_factory(users={"user": "password"}, auth_mechanisms=("PLAIN",))
    with pytest.raises(syncsmtp.AuthRequiredError):
        syncsmtp.send(make_message(), only_plain.policy(auth_mechanisms=("CRAM-MD5",)), timeout=10)
    # Without require_auth, the send goes on unauthenticated.
    result = syncsmtp.send(make_message(), server.policy(username="u", password="p",
                                                         require_auth=False), timeout=10)
    assert result.auth_mechanism is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_declined(smtp_server: SMTPTestServer, mechanism: str) -> None:
    policy = smtp_server.policy(password="wrong-password", auth_mechanisms=(mechanism,))
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), policy, timeout=10)
    assert caught.value.reply is not None and caught.value.reply.code == 535
    text = "\n".join(caught.value.transcript) + str(caught.value)
    assert "wrong-password" not in text
    assert base64.b64encode(b"wrong-password").decode() not in text


def test_auth_malformed_challenge(smtp_server: SMTPTestServer) -> None:
    smtp_server.malformed_auth_challenge()
    with pytest.raises(syncsmtp.AuthMalformedChallengeError):
        syncsmtp.send(make_message(), smtp_server.policy(auth_mechanisms=("LOGIN",)), timeout=10)


def test_auth_server_error(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("auth", 504, "5.5.4 Unrecognized authentication type")
    with pytest.raises(syncsmtp.AuthServerError):
        syncsmtp.send(make_message(), smtp_server.policy(auth_mechanisms=("LOGIN",)), timeout=10)


@pytest.mark.parametrize("pipelining", [True, False])
def test_sender_refused(smtp_server_factory: ServerFactory, pipelining: bool) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.fail("mail", 553, "5.7.1 Sender address rejected")
    with pytest.raises(syncsmtp.SenderRefused) as caught:
        syncsmtp.send(make_message(), server.policy(), timeout=10)
    assert caught.value.reply is not None and caught.value.reply.enhanced == "5.7.1"
    assert server.outbox == []


def test_sender_refused_when_server_wants_auth(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(require_auth=True)
    with pytest.raises(syncsmtp.SenderRefused, match="authentication"):
        syncsmtp.send(make_message(), server.policy(username=None, password=None), timeout=10)


@pytest.mark.parametrize("pipelining", [True, False])
def test_recipients_refused(smtp_server_factory: ServerFactory, pipelining: bool) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.refuse_recipient("x@example.com", 550, "5.1.1 No such user")
    server.refuse_recipient("y@example.com", 450, "4.2.0 Try later")
    with pytest.raises(syncsmtp.RecipientsRefused) as caught:
        syncsmtp.send(make_message(to="x@example.com, y@example.com"), server.policy(), timeout=10)
    assert set(caught.value.refused) == {"x@example.com", "y@example.com"}
    assert not caught.value.transient  # one refusal is permanent
    assert server.outbox == []


@pytest.mark.parametrize(("stage", "code"), [("data", 554), ("end-of-data", 552), ("end-of-data", 451)])
def test_message_refused(smtp_server: SMTPTestServer, stage: str, code: int) -> None:
    smtp_server.fail(stage, code, f"{code // 100}.3.4 refused")
    with pytest.raises(syncsmtp.MessageRefused) as caught:
        syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert caught.value.reply is not None and caught.value.reply.code == code
    assert caught.value.transient is (code == 451)
    assert caught.value.stage == stage
    assert not caught.value.maybe_delivered


def test_message_over_the_size_limit(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("SIZE 1000",))
    with pytest.raises(syncsmtp.MessageRefused, match="at most 1000"):
        syncsmtp.send(make_message(body="x" * 2000 + "\n"), server.policy(), timeout=10)
    assert server.outbox == []


def test_message_error_before_connecting(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(syncsmtp.MessageError):
        syncsmtp.send(b"x", smtp_server.policy(), sender="a@example.com\r\nRCPT TO:<x@example.com>",
                      recipients=["b@example.com"], timeout=10)
    assert smtp_server.connections == 0


def test_every_error_is_an_smtp_error() -> None:
    names = [name for name in syncsmtp.__all__ if name.endswith(("Error", "Refused", "Timeout"))]
    for name in names:
        assert issubclass(getattr(syncsmtp, name), syncsmtp.SMTPError), name


# -- the reactor: Ctrl-C and fork ---------------------------------------------------------


def test_ctrl_c_cancels_a_blocked_send(smtp_server: SMTPTestServer) -> None:
    smtp_server.stall("mail")
    main = threading.get_ident()
    timer = threading.Timer(0.5, lambda: signal_main(main))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            syncsmtp.send(make_message(), smtp_server.policy(), timeout=30)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    smtp_server.clear_faults()
    assert syncsmtp.send(make_message(), smtp_server.policy(), timeout=10).reply.code == 250


def signal_main(thread_id: int) -> None:
    import signal

    signal.pthread_kill(thread_id, signal.SIGINT)


def test_send_works_in_a_forked_child(smtp_server: SMTPTestServer) -> None:
    import os

    syncsmtp.send(make_message(to="parent@example.com"), smtp_server.policy(), timeout=10)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            result = syncsmtp.send(make_message(to="child@example.com"), smtp_server.policy(),
                                   timeout=10)
            status = 0 if result.reply.code == 250 else 2
        finally:
            os._exit(status)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done and os.waitstatus_to_exitcode(status) == 0
    syncsmtp.send(make_message(to="parent-again@example.com"), smtp_server.policy(), timeout=10)
    recipients = [r.recipients[0] for r in smtp_server.wait_for(3)]
    assert sorted(recipients) == ["child@example.com", "parent-again@example.com", "parent@example.com"]


def test_called_from_the_reactor_thread_is_a_clear_error(smtp_server: SMTPTestServer) -> None:
    from syncsmtp import _reactor

    def inside(reactor: Any) -> str:
        try:
            syncsmtp.send(make_message(), smtp_server.policy(), timeout=5)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "reactor thread" in _reactor.run(inside, timeout=10)


def test_a_send_hands_over_to_its_caller_before_its_connection_closes(
        smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from syncsmtp import _reactor

    yielded: list[str] = []
    monkeypatch.setattr(_reactor, "_sched_yield", lambda: yielded.append(threading.current_thread().name))
    syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    # Once, by the reactor thread, when the answer came (QUIT and closing follow).
    assert len(yielded) == 1 and yielded[0] != threading.current_thread().name
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        mailer.send(make_message(), timeout=10)
    assert len(yielded) == 1  # a reused connection has nothing left to do after its answer


# -- engine details ----------------------------------------------------------------------------


def test_tcp_nodelay_is_set(smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TCP_NODELAY each message waits on a delayed ACK (Nagle's algorithm)."""
    from syncsmtp import _engine

    seen: list[int] = []
    original = _engine.SMTPClientProtocol.connectionMade

    def connection_made(self: Any) -> None:
        original(self)
        handle = self.transport.getHandle()
        seen.append(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(_engine.SMTPClientProtocol, "connectionMade", connection_made)
    syncsmtp.send(make_message(), smtp_server.policy(), timeout=10)
    assert seen and seen[0] != 0


def test_pipelining_sends_the_envelope_in_one_write(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", "SIZE 1000000"))
    result = syncsmtp.send(make_message(to="a@example.com, b@example.com"), server.policy(), timeout=10)
    transcript = list(result.transcript)
    mail = next(i for i, line in enumerate(transcript) if line.startswith("C: MAIL FROM"))
    # MAIL, both RCPTs and DATA go out before the first reply to them is read.
    assert [line[:7] for line in transcript[mail : mail + 4]] == ["C: MAIL", "C: RCPT", "C: RCPT", "C: DATA"]
    assert server.wait_for(1)[0].mail_options  # SIZE= was sent because the server offers SIZE


def test_an_application_reactor_can_be_handed_over(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "handover.py"
    script.write_text(
        "import threading, crochet\n"
        "crochet.no_setup()\n"
        "from twisted.internet import reactor\n"
        "threading.Thread(target=reactor.run, kwargs={'installSignalHandlers': False},"
        " daemon=True).start()\n"
        "import syncsmtp\n"
        "from syncsmtp.testing import SMTPTestServer\n"
        "with SMTPTestServer(users={'u': 'p'}) as server:\n"
        "    result = syncsmtp.send(b'Subject: x\\r\\n\\r\\nhi\\r\\n', server.policy(), timeout=10,\n"
        "                          sender='a@example.com', recipients=['b@example.com'])\n"
        "    assert server.wait_for(1)\n"
        "print(result.reply.code, threading.active_count())\n"
        "reactor.callFromThread(reactor.stop)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "250"


def test_a_reactor_that_stops_releases_a_blocked_send_at_once(tmp_path: Any) -> None:
    """The application stops its reactor while a send waits on a silent server:
    the send fails then, not when its 30 s deadline passes."""
    import subprocess
    import sys

    script = tmp_path / "stop.py"
    script.write_text(
        "import socket, threading, time, crochet\n"
        "crochet.no_setup()\n"
        "from twisted.internet import reactor\n"
        "threading.Thread(target=reactor.run, kwargs={'installSignalHandlers': False},"
        " daemon=True).start()\n"
        "import syncsmtp\n"
        "silent = socket.socket()\n"
        "silent.bind(('127.0.0.1', 0))\n"
        "silent.listen(1)  # connects, never greets\n"
        "policy = syncsmtp.Policy(host='127.0.0.1', port=silent.getsockname()[1], tls='none')\n"
        "threading.Timer(0.5, reactor.callFromThread, (reactor.stop,)).start()\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    syncsmtp.send(b'x', policy, timeout=30, sender='a@example.com', recipients=['b@example.com'])\n"
        "except syncsmtp.ConnectionLostError as error:\n"
        "    print('lost', round(time.monotonic() - started, 1), error)\n"
        "silent.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    word, seconds, *_ = out.stdout.split()
    assert word == "lost" and float(seconds) < 10, out.stdout


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_client_certificate(smtp_server_factory: ServerFactory, tls: str) -> None:
    server = smtp_server_factory(tls=tls, require_client_certificate=True)
    policy = server.policy(client_cert=server.client_cert_file, client_key=server.client_key_file)
    syncsmtp.send(make_message(), policy, timeout=10)
    assert server.wait_for(1)[0].client_certificate == "syncsmtp test client"
    with pytest.raises(syncsmtp.TLSFailedError):
        syncsmtp.send(make_message(), server.policy(), timeout=10)
    assert len(server.outbox) == 1


def test_timeout_after_a_large_message_may_have_delivered(smtp_server: SMTPTestServer) -> None:
    """Written through the producer (over one chunk): the stage must still reach end-of-data."""
    smtp_server.stall("end-of-data")
    big = make_message(body=("y" * 70 + "\n") * 20000)  # about 1.4 MiB
    with pytest.raises(syncsmtp.SendTimeout) as caught:
        syncsmtp.send(big, smtp_server.policy(), timeout=3)
    assert caught.value.stage == "end-of-data" and caught.value.maybe_delivered
    assert len(smtp_server.outbox) == 1


FORK_SCRIPT = '''
import os, sys, time, multiprocessing
import syncsmtp
from syncsmtp.testing import SMTPTestServer

def child_send(port, ca_file):
    policy = syncsmtp.Policy(host="127.0.0.1", port=port, ca_file=ca_file, username="u", password="p")
    result = syncsmtp.send(b"Subject: c\\r\\n\\r\\nx\\r\\n", policy, sender="a@example.com",
                           recipients=["b@example.com"], timeout=10)
    return result.reply.code

if __name__ == "__main__":
    with SMTPTestServer(users={"u": "p"}) as server:
        child_send(server.port, server.ca_file)
        pid = os.fork()
        if pid == 0:
            child_send(server.port, server.ca_file)
            sys.exit(0)  # a normal interpreter shutdown in the child must not hang
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        with multiprocessing.get_context("fork").Pool(2) as pool:
            codes = pool.starmap(child_send, [(server.port, server.ca_file)] * 4)
        assert codes == [250] * 4, codes
        server.wait_for(6)
    print("ok")
'''


def test_fork_children_and_multiprocessing_pool(tmp_path: Any) -> None:
    """gunicorn --preload and multiprocessing's fork: children send, exit cleanly,
    and leave the parent's server and files alone."""
    import subprocess
    import sys

    script = tmp_path / "fork_children.py"
    script.write_text(FORK_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_host_name_goes_through_the_resolver_and_is_verified(smtp_server: SMTPTestServer) -> None:
    """A name (not an IP) is resolved in the reactor and checked as a DNS name in the certificate."""
    result = syncsmtp.send(make_message(), smtp_server.policy(host="localhost"), timeout=20)
    assert result.tls is not None and result.host == "localhost"


def test_non_ascii_address_needs_smtputf8(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(syncsmtp.MessageRefused, match="SMTPUTF8"):
        syncsmtp.send(make_message(to="jürgen@example.com"), smtp_server.policy(), timeout=10)
    assert smtp_server.outbox == []
    assert not any(line.startswith(b"MAIL") for conn in smtp_server.commands for line in conn)


def test_first_send_from_the_reactor_thread_is_refused_and_sends_nothing(tmp_path: Any) -> None:
    """Even before syncsmtp ran anything there, a send in the reactor thread is a RuntimeError."""
    import subprocess
    import sys

    script = tmp_path / "first_in_reactor.py"
    script.write_text(
        "import threading, crochet\n"
        "crochet.no_setup()\n"
        "from twisted.internet import reactor\n"
        "import syncsmtp\n"
        "outcome = []\n"
        "def inside():\n"
        "    try:\n"
        "        syncsmtp.send(b'x', syncsmtp.Policy(host='127.0.0.1', port=9, tls='none'),\n"
        "                      sender='a@example.com', recipients=['b@example.com'], timeout=2)\n"
        "    except RuntimeError as exc:\n"
        "        outcome.append('RuntimeError')\n"
        "    except Exception as exc:\n"
        "        outcome.append(type(exc).__name__)\n"
        "    reactor.stop()\n"
        "reactor.callWhenRunning(inside)\n"
        "reactor.run(installSignalHandlers=False)\n"
        "print(outcome[0])\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "RuntimeError", out.stderr


def test_results_pickle(smtp_server: SMTPTestServer) -> None:
    import pickle

    smtp_server.refuse_recipient("gone@example.com")
    result = syncsmtp.send(make_message(to="bob@example.com, gone@example.com"), smtp_server.policy(),
                           timeout=10)
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result and copy.refused["gone@example.com"].code == 550
    assert copy.transcript == result.transcript


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusal_stages_are_the_same_with_and_without_pipelining(
    smtp_server_factory: ServerFactory, pipelining: bool
) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.fail("mail", 553, "5.7.1 No", times=1)
    with pytest.raises(syncsmtp.SenderRefused) as sender:
        syncsmtp.send(make_message(), server.policy(), timeout=10)
    server.refuse_recipient("bob@example.com")
    with pytest.raises(syncsmtp.RecipientsRefused) as recipients:
        syncsmtp.send(make_message(), server.policy(), timeout=10)
    assert (sender.value.stage, recipients.value.stage) == ("mail", "rcpt")


def test_auth_plain_with_unsupported_mechanism_reply_is_a_server_error(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("auth", 504, "5.5.4 Unrecognized authentication type")
    with pytest.raises(syncsmtp.AuthServerError):
        syncsmtp.send(make_message(), smtp_server.policy(auth_mechanisms=("PLAIN",)), timeout=10)



@pytest.mark.parametrize("extensions", [("8BITMIME",), ("PIPELINING", "CHUNKING")], ids=["DATA", "BDAT"])
def test_a_message_just_under_a_chunk_that_dot_stuffing_makes_longer(
    smtp_server_factory: ServerFactory, extensions: tuple[str, ...]
) -> None:
    """Under CHUNK_SIZE before dot-stuffing, over it after: every piece must still be written."""
    from syncsmtp._wire import CHUNK_SIZE

    server = smtp_server_factory(tls="none", extensions=extensions)
    body = b".x\r\n" * ((CHUNK_SIZE - 100) // 4)
    data = b"Subject: dots\r\n\r\n" + body
    result = syncsmtp.send(data, server.policy(), timeout=10, sender="a@example.com",
                           recipients=["b@example.com"])
    assert result.reply is not None and result.reply.code == 250
    assert server.outbox[0].data == data


@pytest.mark.parametrize("blank_line", [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n"])
def test_the_header_section_of_bytes_ends_at_its_first_empty_line(blank_line: bytes) -> None:
    # Before the empty line a control character is a header's and refused;
    # after it, the body's business.
    from syncsmtp.message import prepare_message

    envelope = {"sender": "a@example.com", "recipients": ["b@example.com"]}
    with pytest.raises(syncsmtp.MessageError, match="'Subject'"):
        prepare_message(b"From: a@example.com\nSubject: x\x01y" + blank_line + b"body", **envelope)
    prepare_message(b"From: a@example.com\nSubject: xy" + blank_line + b"bo\x01dy\n\nmore", **envelope)
    with pytest.raises(syncsmtp.MessageError, match="'X'"):
        prepare_message(b"Subject: xy\r\nX: \x1b" + blank_line + b"body", **envelope)
