"""Every syncsmtp error is also the exception smtplib (or ssl, or the socket
layer) raises in the same situation, with smtplib's attributes.

Each test provokes the error in a real SMTP conversation with the test server
(or a scripted loopback peer), catches it with the ``except`` clause code
written for smtplib would use, and checks smtplib's attributes. Where smtplib
itself can be driven into the same situation, it is, and the two are compared.
"""

from __future__ import annotations

import email.message
import pickle
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from loopback import serving

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
E = TypeVar("E", bound=BaseException)

SENDER = "ann@example.com"


def make_message(to: str = "bob@example.com") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = "test"
    message.set_content("hello\n")
    return message


def caught_by(kind: type[E], policy: syncsmtp.Policy, message: Any = None, timeout: float = 10,
              **options: Any) -> E:
    """Send, catching with ``except kind`` exactly as smtplib-era code does;
    any other exception escapes and fails the test."""
    try:
        syncsmtp.send(make_message() if message is None else message, policy, timeout=timeout,
                      **options)
    except kind as error:
        return error
    pytest.fail(f"the send succeeded; expected {kind.__name__}")


def smtplib_error(server: SMTPTestServer, *, tls: str = "starttls", ca_file: str | None = "",
                  login: tuple[str, str] | None = None, sender: str = SENDER,
                  recipients: tuple[str, ...] = ("bob@example.com",), timeout: float = 10
                  ) -> Any:
    """What smtplib raises when it does the same send against ``server``
    (logging in as the server's one user when it has one and ``login`` is not given)."""
    cafile = server.ca_file if ca_file == "" else ca_file
    if login is None and len(server.users) == 1:
        ((user, password),) = server.users.items()
        login = (user, password)
    data = make_message(", ".join(recipients)).as_bytes()
    try:
        if tls == "implicit":
            context = ssl.create_default_context(cafile=cafile)
            client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout,
                                                    context=context)
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=timeout)
        with client:
            if tls == "starttls":
                client.starttls(context=ssl.create_default_context(cafile=cafile))
            if login is not None:
                client.login(*login)
            client.sendmail(sender, list(recipients), data)
    except Exception as error:  # the point is to see what smtplib raises
        return error
    pytest.fail("smtplib sent the message")


def assert_plain_message(error: syncsmtp.SMTPError) -> None:
    """OSError's constructor left syncsmtp's message alone."""
    assert error.args == (error.message,)
    assert str(error) == error.message
    assert error.errno is None and error.strerror is None
    assert repr(error) == f"{type(error).__name__}({error.message!r})"


def assert_reply_attributes(error: syncsmtp.SMTPError, code: int, text: bytes) -> None:
    assert error.reply is not None
    assert (error.smtp_code, error.smtp_error) == (code, text)
    assert isinstance(error.smtp_error, bytes)
    assert_plain_message(error)


def assert_no_reply_attributes(error: syncsmtp.SMTPError) -> None:
    assert error.reply is None
    assert error.smtp_code == -1
    assert error.smtp_error == error.message.encode("utf-8")
    assert_plain_message(error)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def garbage_peer() -> Iterator[int]:
    """A loopback peer that greets, then answers EHLO with a line that is not SMTP."""

    def handle(connection: socket.socket) -> None:
        connection.settimeout(5)
        connection.sendall(b"220 hello\r\n")
        connection.recv(4096)
        connection.sendall(b"this is not smtp\r\n")
        for _ in range(16):  # until the client hangs up
            if not connection.recv(4096):
                return

    with serving(handle, connections=2) as port:
        yield port


# -- one test per row of the table in docs/errors.rst ---------------------------------------------


def test_smtp_error_is_an_smtp_exception() -> None:
    with garbage_peer() as port:
        error = caught_by(smtplib.SMTPException,
                          syncsmtp.Policy(host="127.0.0.1", port=port, tls="none"))
    assert isinstance(error, syncsmtp.ProtocolError) and isinstance(error, OSError)
    assert not isinstance(error, smtplib.SMTPResponseException)
    assert_no_reply_attributes(error)
    assert "not an SMTP reply" in str(error)


def test_connect_error_is_a_connection_error() -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", port=closed_port(), tls="none")
    error = caught_by(ConnectionError, policy)
    assert isinstance(error, syncsmtp.ConnectError) and isinstance(error, smtplib.SMTPException)
    # A refused TCP connection is not SMTPConnectError in smtplib either.
    assert not isinstance(error, (smtplib.SMTPConnectError, syncsmtp.SessionRefused))
    assert error.stage == "connect"
    assert_no_reply_attributes(error)


def test_session_refused_is_an_smtp_connect_error(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("greeting", 554, "5.3.2 go away")
    error = caught_by(smtplib.SMTPConnectError, smtp_server.policy())
    assert isinstance(error, syncsmtp.SessionRefused) and isinstance(error, syncsmtp.ConnectError)
    assert isinstance(error, ConnectionError)
    assert error.stage == "greeting" and not error.transient
    assert_reply_attributes(error, 554, b"5.3.2 go away")
    theirs = smtplib_error(smtp_server)
    assert isinstance(theirs, smtplib.SMTPConnectError)
    assert (theirs.smtp_code, theirs.smtp_error) == (error.smtp_code, error.smtp_error)


def test_send_timeout_is_a_timeout_error(smtp_server: SMTPTestServer) -> None:
    smtp_server.stall("mail")
    error = caught_by(TimeoutError, smtp_server.policy(), timeout=1.5)
    assert isinstance(error, syncsmtp.SendTimeout) and error.stage == "mail"
    assert not error.maybe_delivered
    assert_no_reply_attributes(error)
    # smtplib turns a time-out after connecting into SMTPServerDisconnected.
    theirs = smtplib_error(smtp_server, timeout=1.5)
    assert isinstance(theirs, smtplib.SMTPServerDisconnected)
    assert isinstance(error, type(theirs))


def test_connection_lost_is_server_disconnected(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop("mail")
    error = caught_by(smtplib.SMTPServerDisconnected, smtp_server.policy())
    assert isinstance(error, syncsmtp.ConnectionLostError) and isinstance(error, ConnectionError)
    assert not error.maybe_delivered
    assert_no_reply_attributes(error)
    assert isinstance(error, type(smtplib_error(smtp_server)))


def test_ehlo_required_is_a_helo_error(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(ehlo=False)
    error = caught_by(smtplib.SMTPHeloError, server.policy())
    assert isinstance(error, syncsmtp.EHLORequiredError) and error.stage == "ehlo"
    assert error.reply is not None and 500 <= error.reply.code < 600
    expected = f"{error.reply.enhanced} {error.reply.text}" if error.reply.enhanced else error.reply.text
    assert_reply_attributes(error, error.reply.code, expected.encode())


def test_tls_required_is_not_supported(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    error = caught_by(smtplib.SMTPNotSupportedError, server.policy(tls="starttls"))
    assert isinstance(error, syncsmtp.TLSRequiredError)
    assert_no_reply_attributes(error)
    assert isinstance(error, type(smtplib_error(server)))
    assert server.outbox == []


def test_tls_handshake_failure_is_an_ssl_error(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users=None)
    error = caught_by(ssl.SSLError, server.policy(tls="implicit"))
    assert isinstance(error, syncsmtp.TLSFailedError)
    assert not isinstance(error, ssl.SSLCertVerificationError)
    assert (error.library, error.reason) == (None, None)
    assert_no_reply_attributes(error)
    assert isinstance(error, type(smtplib_error(server, tls="implicit", ca_file=None)))


def test_starttls_refusal_is_an_ssl_error_with_the_reply(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("starttls", 454, "4.7.0 TLS not available due to local problem")
    error = caught_by(ssl.SSLError, smtp_server.policy())
    assert isinstance(error, syncsmtp.TLSFailedError) and error.transient
    assert_reply_attributes(error, 454, b"4.7.0 TLS not available due to local problem")


def test_certificate_error_is_a_cert_verification_error(smtp_server: SMTPTestServer) -> None:
    error = caught_by(ssl.SSLCertVerificationError, smtp_server.policy(ca_file=None))
    assert isinstance(error, syncsmtp.CertificateError)
    assert isinstance(error, ssl.CertificateError) and isinstance(error, ValueError)
    assert (error.library, error.reason) == ("SSL", "CERTIFICATE_VERIFY_FAILED")
    assert error.verify_code == 1  # OpenSSL's "unspecified": the failed check is not known here
    assert error.verify_message == error.message
    assert_no_reply_attributes(error)
    theirs = smtplib_error(smtp_server, ca_file=None)
    assert isinstance(theirs, ssl.SSLCertVerificationError)
    assert theirs.reason == error.reason and theirs.library == error.library
    assert smtp_server.outbox == []


def test_auth_required_is_not_supported(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users=None)
    error = caught_by(smtplib.SMTPNotSupportedError, server.policy(username="u", password="p"))
    assert isinstance(error, syncsmtp.AuthRequiredError)
    assert_no_reply_attributes(error)
    assert isinstance(error, type(smtplib_error(server, login=("u", "p"))))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_declined_is_an_authentication_error(smtp_server: SMTPTestServer, mechanism: str) -> None:
    policy = smtp_server.policy(password="wrong-password", auth_mechanisms=(mechanism,))
    error = caught_by(smtplib.SMTPAuthenticationError, policy)
    assert isinstance(error, syncsmtp.AuthDeclinedError)
    assert b"wrong-password" not in error.smtp_error
    theirs = smtplib_error(smtp_server, login=("user", "wrong-password"))
    assert isinstance(theirs, smtplib.SMTPAuthenticationError)
    assert_reply_attributes(error, 535, theirs.smtp_error)


def test_auth_server_error_is_an_authentication_error(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("auth", 504, "5.5.4 Unrecognized authentication type")
    error = caught_by(smtplib.SMTPAuthenticationError, smtp_server.policy(auth_mechanisms=("LOGIN",)))
    assert isinstance(error, syncsmtp.AuthServerError)
    assert_reply_attributes(error, 504, b"5.5.4 Unrecognized authentication type")
    theirs = smtplib_error(smtp_server)
    assert isinstance(theirs, smtplib.SMTPAuthenticationError)
    assert (theirs.smtp_code, theirs.smtp_error) == (error.smtp_code, error.smtp_error)


def test_auth_malformed_challenge_is_an_smtp_exception(smtp_server: SMTPTestServer) -> None:
    smtp_server.malformed_auth_challenge()
    error = caught_by(smtplib.SMTPException, smtp_server.policy(auth_mechanisms=("LOGIN",)))
    assert isinstance(error, syncsmtp.AuthMalformedChallengeError)
    assert not isinstance(error, smtplib.SMTPAuthenticationError)
    assert_no_reply_attributes(error)


@pytest.mark.parametrize("pipelining", [True, False])
def test_sender_refused_is_smtp_sender_refused(smtp_server_factory: ServerFactory,
                                               pipelining: bool) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.fail("mail", 553, "5.7.1 Sender address rejected")
    error = caught_by(smtplib.SMTPSenderRefused, server.policy())
    assert isinstance(error, syncsmtp.SenderRefused) and error.stage == "mail"
    assert error.sender == SENDER
    assert_reply_attributes(error, 553, b"5.7.1 Sender address rejected")
    theirs = smtplib_error(server)
    assert isinstance(theirs, smtplib.SMTPSenderRefused)
    assert (theirs.smtp_code, theirs.smtp_error, theirs.sender) == (
        error.smtp_code, error.smtp_error, error.sender)


@pytest.mark.parametrize("pipelining", [True, False])
def test_recipients_refused_is_smtp_recipients_refused(smtp_server_factory: ServerFactory,
                                                       pipelining: bool) -> None:
    server = smtp_server_factory(extensions=("PIPELINING",) if pipelining else ())
    server.refuse_recipient("x@example.com", 550, "5.1.1 No such user")
    server.refuse_recipient("y@example.com", 450, "4.2.0 Try later")
    error = caught_by(smtplib.SMTPRecipientsRefused, server.policy(),
                      make_message(to="x@example.com, y@example.com"))
    assert isinstance(error, syncsmtp.RecipientsRefused) and error.stage == "rcpt"
    assert error.recipients == {"x@example.com": (550, b"5.1.1 No such user"),
                                "y@example.com": (450, b"4.2.0 Try later")}
    assert_reply_attributes(error, 550, b"5.1.1 No such user")  # the first refusal
    theirs = smtplib_error(server, recipients=("x@example.com", "y@example.com"))
    assert isinstance(theirs, smtplib.SMTPRecipientsRefused)
    assert theirs.recipients == error.recipients
    assert server.outbox == []


@pytest.mark.parametrize(("stage", "code", "text"), [("data", 554, "5.3.0 no data today"),
                                                      ("end-of-data", 552, "5.3.4 too big")])
def test_message_refused_is_smtp_data_error(smtp_server: SMTPTestServer, stage: str, code: int,
                                            text: str) -> None:
    smtp_server.fail(stage, code, text)
    error = caught_by(smtplib.SMTPDataError, smtp_server.policy())
    assert isinstance(error, syncsmtp.MessageRefused) and error.stage == stage
    assert_reply_attributes(error, code, text.encode())
    theirs = smtplib_error(smtp_server)
    assert isinstance(theirs, smtplib.SMTPDataError)
    assert (theirs.smtp_code, theirs.smtp_error) == (error.smtp_code, error.smtp_error)


def test_message_refused_before_the_data_is_a_data_error(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("SIZE 1000",))
    message = make_message()
    message.set_content("x" * 2000 + "\n")
    error = caught_by(smtplib.SMTPDataError, server.policy(), message)
    assert isinstance(error, syncsmtp.MessageRefused)
    assert_no_reply_attributes(error)


def test_message_error_stays_a_value_error(smtp_server: SMTPTestServer) -> None:
    bad_sender = "a@example.com\r\nRCPT TO:<x@example.com>"
    error = caught_by(ValueError, smtp_server.policy(), b"Subject: x\r\n\r\nbody\r\n",
                      sender=bad_sender, recipients=["b@example.com"])
    assert isinstance(error, syncsmtp.MessageError) and isinstance(error, smtplib.SMTPException)
    assert_no_reply_attributes(error)
    assert smtp_server.connections == 0


# -- the class tree -------------------------------------------------------------------------------

EXPECTED: dict[str, tuple[type[BaseException], ...]] = {
    "SMTPError": (smtplib.SMTPException, OSError),
    "ConnectError": (ConnectionError,),
    "SessionRefused": (smtplib.SMTPConnectError, ConnectionError),
    "SendTimeout": (TimeoutError, smtplib.SMTPServerDisconnected),
    "ConnectionLostError": (smtplib.SMTPServerDisconnected, ConnectionError),
    "ProtocolError": (smtplib.SMTPException,),
    "EHLORequiredError": (smtplib.SMTPHeloError,),
    "TLSError": (smtplib.SMTPException,),
    "TLSRequiredError": (smtplib.SMTPNotSupportedError,),
    "RequireTLSError": (smtplib.SMTPNotSupportedError,),
    "ExtensionNotOfferedError": (smtplib.SMTPNotSupportedError,),
    "TLSFailedError": (ssl.SSLError,),
    "CertificateError": (ssl.SSLCertVerificationError, ValueError),
    "AuthError": (smtplib.SMTPException,),
    "AuthRequiredError": (smtplib.SMTPNotSupportedError,),
    "AuthDeclinedError": (smtplib.SMTPAuthenticationError,),
    "AuthMalformedChallengeError": (smtplib.SMTPException,),
    "AuthServerError": (smtplib.SMTPAuthenticationError,),
    "RefusedError": (smtplib.SMTPException,),
    "SenderRefused": (smtplib.SMTPSenderRefused,),
    "RecipientsRefused": (smtplib.SMTPRecipientsRefused,),
    "MessageRefused": (smtplib.SMTPDataError,),
    "MessageError": (ValueError,),
}


def error_names() -> list[str]:
    return [name for name in syncsmtp.__all__ if name.endswith(("Error", "Refused", "Timeout"))]


def test_every_error_has_its_stdlib_bases() -> None:
    assert sorted(EXPECTED) == sorted(error_names())
    for name, bases in EXPECTED.items():
        cls = getattr(syncsmtp, name)
        assert issubclass(cls, smtplib.SMTPException), name
        for base in bases:
            assert issubclass(cls, base), (name, base)
        error = cls("what happened")  # the bases' instance layouts agree
        assert_no_reply_attributes(error)


def test_the_docs_table_matches_the_classes() -> None:
    text = (Path(__file__).parent.parent / "docs" / "errors.rst").read_text(encoding="utf-8")
    table = text[text.index(".. list-table:: syncsmtp errors as smtplib"):]
    table = table[:table.index("\n\n", table.index("* - "))]
    rows = re.findall(r"\* - :class:`~syncsmtp\.(\w+)`\n\s+- (.+)", table)
    assert sorted(name for name, _ in rows) == sorted(EXPECTED)
    for name, also in rows:
        documented = set(re.findall(r":exc:`([\w.]+)`", also))
        expected = {f"{base.__module__}.{base.__qualname__}".removeprefix("builtins.")
                    for base in EXPECTED[name]}
        assert documented == expected, name


# -- pickling -------------------------------------------------------------------------------------

FIELDS = ("message", "args", "reply", "host", "stage", "maybe_delivered", "transcript", "transient",
          "smtp_code", "smtp_error", "errno", "strerror")
EXTRA_FIELDS = {
    "SenderRefused": ("sender",),
    "RecipientsRefused": ("refused", "recipients"),
    "TLSFailedError": ("library", "reason"),
    "CertificateError": ("library", "reason", "verify_code", "verify_message"),
    "ExtensionNotOfferedError": ("extension",),
}


def assert_same_error(copy: syncsmtp.SMTPError, error: syncsmtp.SMTPError) -> None:
    assert type(copy) is type(error)
    for field in FIELDS + EXTRA_FIELDS.get(type(error).__name__, ()):
        assert getattr(copy, field) == getattr(error, field), field
    assert str(copy) == str(error)


def test_every_error_pickles_with_every_field() -> None:
    reply = syncsmtp.Reply(451, "4.3.0", "try later\nreally")
    common: dict[str, Any] = {"reply": reply, "host": "h", "stage": "rcpt", "maybe_delivered": True,
                              "transcript": ("C: MAIL FROM:<a@example.com>", "S: 451 4.3.0 try later")}
    extra: dict[str, dict[str, Any]] = {
        "SenderRefused": {"sender": "a@example.com"},
        "RecipientsRefused": {"refused": {"a@example.com": reply,
                                          "b@example.com": syncsmtp.Reply(550, None, "no")}},
        "CertificateError": {"verify_code": 62, "verify_message": "Hostname mismatch"},
        "ExtensionNotOfferedError": {"extension": "REQUIRETLS"},
    }
    for name in error_names():
        error = getattr(syncsmtp, name)("what happened", **common, **extra.get(name, {}))
        assert error.smtp_error == b"4.3.0 try later\n4.3.0 really"
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            assert_same_error(pickle.loads(pickle.dumps(error, protocol)), error)
    refused = syncsmtp.RecipientsRefused("x", **extra["RecipientsRefused"])
    assert pickle.loads(pickle.dumps(refused)).recipients == {
        "a@example.com": (451, b"4.3.0 try later\n4.3.0 really"), "b@example.com": (550, b"no")}


def test_errors_from_a_conversation_pickle(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory()
    server.fail("mail", 553, "5.7.1 Sender address rejected", times=1)
    sender = caught_by(smtplib.SMTPSenderRefused, server.policy())
    server.refuse_recipient("bob@example.com", 550, "5.1.1 No such user")
    recipients = caught_by(smtplib.SMTPRecipientsRefused, server.policy())
    certificate = caught_by(ssl.SSLCertVerificationError, server.policy(ca_file=None))
    pairs: list[tuple[syncsmtp.SMTPError, type[BaseException]]] = [
        (sender, smtplib.SMTPSenderRefused), (recipients, smtplib.SMTPRecipientsRefused),
        (certificate, ssl.SSLCertVerificationError)]
    for error, theirs in pairs:
        assert isinstance(error, syncsmtp.SMTPError) and error.transcript
        copy = pickle.loads(pickle.dumps(error))
        assert_same_error(copy, error)
        assert isinstance(copy, theirs)


def test_str_is_never_rewritten_by_oserror() -> None:
    # OSError reads (errno, strerror) from two arguments; syncsmtp passes one,
    # so messages that look like numbers or tuples stay as they are.
    for message in ("2", "13 permission denied", "", "(550, b'x')"):
        error = syncsmtp.ConnectError(message)
        assert_plain_message(error)
        assert pickle.loads(pickle.dumps(error)).args == (message,)
