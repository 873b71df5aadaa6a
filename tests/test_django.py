"""syncsmtp.django.EmailBackend in a real Django project (tests/django_site), over real SMTP.

Most tests send the same input through syncsmtp's backend and through Django's
own ``django.core.mail.backends.smtp.EmailBackend`` to the same test server,
and compare what the server received: envelope, data, and how failures are
reported and swallowed.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django
import pytest
from django.conf import settings
from django.core import checks, mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import RequestFactory, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment
from django.views.debug import ExceptionReporter
from django_site.urls import send_view
from postfix import PostfixInstance
from tls_peer import CertificateShape, private_ca, tls_peer

import syncsmtp
import syncsmtp.django
from syncsmtp.testing import ReceivedMessage, SMTPTestServer

# The project under tests/django_site (tests/ is on sys.path, as for conftest's `import postfix`).
os.environ["DJANGO_SETTINGS_MODULE"] = "django_site.settings"
django.setup()

ServerFactory = Callable[..., SMTPTestServer]
Sender = Callable[[BaseEmailBackend, Path], int]

REPO = Path(__file__).resolve().parent.parent
OURS = "syncsmtp.django.EmailBackend"
DJANGOS = "django.core.mail.backends.smtp.EmailBackend"
# Django adds a Date and a Message-ID of its own unless the headers give them.
FIXED = {"Date": "Mon, 01 Jan 2024 12:00:00 +0000", "Message-ID": "<fixed.1@example.com>"}


# -- helpers ---------------------------------------------------------------------------------------


def server_settings(server: SMTPTestServer, **extra: Any) -> override_settings:
    """Settings that point both backends at ``server``: plaintext, no AUTH, unless ``extra`` says."""
    options: dict[str, Any] = {
        "EMAIL_HOST": server.host, "EMAIL_PORT": server.port, "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False, "EMAIL_HOST_USER": "", "EMAIL_HOST_PASSWORD": "", "EMAIL_TIMEOUT": 10,
    }
    options.update(extra)
    return override_settings(**options)


def tls_settings(server: SMTPTestServer, **extra: Any) -> override_settings:
    """STARTTLS or implicit TLS (as the server does) with AUTH as ``user``; syncsmtp trusts the CA."""
    options: dict[str, Any] = {
        "EMAIL_USE_TLS": server.tls == "starttls", "EMAIL_USE_SSL": server.tls == "implicit",
        "EMAIL_HOST_USER": "user", "EMAIL_HOST_PASSWORD": "password", "SYNCSMTP": {"ca_file": server.ca_file},
    }
    options.update(extra)
    return server_settings(server, **options)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_BOUNDARY = re.compile(rb"={15}\d+(?:\.\d+)?==")
_VOLATILE = re.compile(rb"(?im)^(Date|Message-ID): [^\r\n]*\r\n")


def normalise(data: bytes, *, volatile: bool = False) -> bytes:
    """Random MIME boundaries numbered in order of appearance; with ``volatile``, the
    values of Date and Message-ID (for the helpers that give no way to fix them)."""
    names: dict[bytes, bytes] = {}
    data = _BOUNDARY.sub(lambda match: names.setdefault(match.group(), b"BOUNDARY-%d" % len(names)), data)
    if volatile:
        data = _VOLATILE.sub(lambda match: match.group(1) + b": -\r\n", data)
    return data


def side_by_side(
    server: SMTPTestServer, send: Sender, tmp_path: Path, *, volatile: bool = False
) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
    """Send one message through syncsmtp's backend, then through Django's, with the settings
    in force; check both delivered the same envelope and data, and return what each delivered."""
    before = len(server.outbox)
    assert send(mail.get_connection(OURS), tmp_path) == 1
    ours = server.wait_for(before + 1)[before:]
    assert send(mail.get_connection(DJANGOS), tmp_path) == 1
    theirs = server.wait_for(before + 2)[before + 1:]
    assert ours[0].sender == theirs[0].sender
    assert ours[0].recipients == theirs[0].recipients
    assert normalise(ours[0].data, volatile=volatile) == normalise(theirs[0].data, volatile=volatile)
    return ours, theirs


def content(part: Any) -> Any:
    """A part's content, with the CRLF line ends of the wire made LF for text."""
    value = part.get_content()
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def simple_message(subject: str = "hello", to: tuple[str, ...] = ("bob@example.com",)) -> mail.EmailMessage:
    return mail.EmailMessage(subject, "body\n", "ann@example.com", list(to))


# -- 1. the same envelope and data as Django's backend (plaintext, no AUTH) ------------------------


def via_send_mail(connection: BaseEmailBackend, tmp_path: Path) -> int:
    return int(mail.send_mail("Hello", "The body.\n", "ann@example.com", ["bob@example.com"],
                              html_message="<p>The body.</p>", connection=connection))


def via_mail_admins(connection: BaseEmailBackend, tmp_path: Path) -> int:
    with override_settings(ADMINS=[("Admin Person", "admin@example.com")], SERVER_EMAIL="srv@example.com"):
        mail.mail_admins("Broken", "Something broke.\n", connection=connection)
    return 1


def via_message_send(connection: BaseEmailBackend, tmp_path: Path) -> int:
    message = mail.EmailMessage(
        "Plain", "Line one\n.starts with a dot\n..two dots\n", "Ann <ann@example.com>",
        ["bob@example.com", "Carl Example <carl@example.com>"], bcc=["hidden@example.com"],
        cc=["cc@example.com"], reply_to=["Replies <reply@example.com>"],
        headers={**FIXED, "X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsub@example.com>"},
        connection=connection,
    )
    return int(message.send())


def via_alternatives_and_attachments(connection: BaseEmailBackend, tmp_path: Path) -> int:
    message = mail.EmailMultiAlternatives(
        "Report", "See the attachments.\n", "ann@example.com", ["bob@example.com"], headers=FIXED,
    )
    message.attach_alternative("<p>See the <b>attachments</b>.</p>", "text/html")
    message.attach("data.bin", bytes(range(256)) * 4, "application/octet-stream")
    message.attach("notes.txt", "plain text, ünïcode\n.a dot line\n", "text/plain")
    on_disk = tmp_path / "table.csv"
    on_disk.write_text("a,b\n1,2\n")
    message.attach_file(str(on_disk))
    return int(connection.send_messages([message]))


def via_non_ascii(connection: BaseEmailBackend, tmp_path: Path) -> int:
    message = mail.EmailMessage(
        "Grüße — ünïcödé ✓ 日本語", "Body: ü, ß, 日本語 and € signs.\n",
        "Jürgen Müller <jurgen@bücher.example>",
        ["Zoë Ångström <zoe@exämple.com>", "plain@example.com"], cc=["Ça Va <ca@例え.jp>"],
        headers={**FIXED, "X-Note": "naïve café"},
    )
    return int(connection.send_messages([message]))


def via_long_display_names(connection: BaseEmailBackend, tmp_path: Path) -> int:
    # sanitize_address() folds these over two lines ("...\n ..."): the envelope must still be
    # the bare address, as smtplib makes it.
    message = mail.EmailMessage(
        "Long names", "body\n",
        "Ünïcödé Customer Support Department of a Company With a Long Name <support@example.com>",
        ["Very Long Display Name Of The Customer Support Department Team Notifications <to@example.com>"],
        headers=FIXED,
    )
    return int(connection.send_messages([message]))


def test_send_mail_same_as_djangos(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        (received,), _ = side_by_side(server, via_send_mail, tmp_path, volatile=True)
    assert received.sender == "ann@example.com" and received.recipients == ("bob@example.com",)
    assert received.message.get_content_type() == "multipart/alternative"
    assert not received.tls and received.auth_user is None


def test_mail_admins_same_as_djangos(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        (received,), _ = side_by_side(server, via_mail_admins, tmp_path, volatile=True)
    assert received.sender == "srv@example.com" and received.recipients == ("admin@example.com",)
    assert received.message["Subject"] == "[Django] Broken"


def test_message_send_with_cc_bcc_reply_to_and_headers(smtp_server_factory: ServerFactory,
                                                       tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        ours, theirs = side_by_side(server, via_message_send, tmp_path)
    (received,) = ours
    assert received.data == theirs[0].data, "no boundary here: byte for byte"
    assert received.sender == "ann@example.com"
    assert received.recipients == ("bob@example.com", "carl@example.com", "cc@example.com",
                                   "hidden@example.com")
    parsed = received.message
    assert "Bcc" not in parsed and b"hidden@example.com" not in received.data
    assert parsed["Cc"] == "cc@example.com" and parsed["Reply-To"] == "Replies <reply@example.com>"
    assert parsed["X-Campaign"] == "spring" and parsed["Message-ID"] == FIXED["Message-ID"]
    assert b"\r\n..starts with a dot\r\n" in received.raw, "dot-stuffed on the wire"
    assert content(parsed) == "Line one\n.starts with a dot\n..two dots\n"


def test_alternatives_and_attachments(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        (received,), _ = side_by_side(server, via_alternatives_and_attachments, tmp_path)
    parsed = received.message
    assert parsed.get_content_type() == "multipart/mixed"
    attachments = {part.get_filename(): content(part) for part in parsed.iter_attachments()}
    assert attachments == {
        "data.bin": bytes(range(256)) * 4,
        "notes.txt": "plain text, ünïcode\n.a dot line\n",
        "table.csv": "a,b\n1,2\n",
    }
    body = parsed.get_body(("html",))
    assert body is not None and content(body) == "<p>See the <b>attachments</b>.</p>"


def test_non_ascii_subject_body_names_and_idna_domains(smtp_server_factory: ServerFactory,
                                                       tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        (received,), _ = side_by_side(server, via_non_ascii, tmp_path)
    assert received.sender == "jurgen@xn--bcher-kva.example"
    assert received.recipients == ("zoe@xn--exmple-cua.com", "plain@example.com", "ca@xn--r8jz45g.jp")
    assert not any(option.upper() == "SMTPUTF8" for option in received.mail_options)
    parsed = received.message
    assert parsed["Subject"] == "Grüße — ünïcödé ✓ 日本語"
    assert parsed["From"].addresses[0].display_name == "Jürgen Müller"
    assert parsed["To"].addresses[0].display_name == "Zoë Ångström"
    assert parsed["X-Note"] == "naïve café"
    assert content(parsed) == "Body: ü, ß, 日本語 and € signs.\n"


def test_long_display_names_keep_a_bare_envelope(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    """Regression: the folded output of sanitize_address() was refused as header injection."""
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        (received,), _ = side_by_side(server, via_long_display_names, tmp_path)
    assert received.sender == "support@example.com" and received.recipients == ("to@example.com",)
    assert received.message["From"].addresses[0].display_name.startswith("Ünïcödé Customer Support")


def test_quoted_local_part_with_a_space(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    def send(connection: BaseEmailBackend, tmp_path: Path) -> int:
        message = mail.EmailMessage("quoted", "body\n", "ann@example.com", ['"john doe"@example.com'],
                                    headers=FIXED)
        return int(connection.send_messages([message]))

    server = smtp_server_factory(tls="none")
    with server_settings(server):
        side_by_side(server, send, tmp_path)


@pytest.mark.parametrize("fail_silently", [False, True])
def test_addresses_without_a_domain_as_djangos(smtp_server_factory: ServerFactory, tmp_path: Path,
                                               fail_silently: bool) -> None:
    """A local part alone goes to the server as smtplib sends it (a local relay adds its domain);
    it was refused, and with fail_silently the mail was dropped."""
    def send(connection: BaseEmailBackend, tmp_path: Path) -> int:
        return int(mail.send_mail("Subject", "Content", "tester", ["django", "Other <other>"],
                                  fail_silently=fail_silently, connection=connection))

    server = smtp_server_factory(tls="none")
    with server_settings(server):
        side_by_side(server, send, tmp_path, volatile=True)
    for commands in server.commands:  # ours, then Django's (smtplib writes "mail FROM:")
        paths = [re.match(rb"(?i)(MAIL FROM|RCPT TO):(<[^>]*>)", line) for line in commands]
        assert [(m[1].upper(), m[2]) for m in paths if m] == [
            (b"MAIL FROM", b"<tester>"), (b"RCPT TO", b"<django>"), (b"RCPT TO", b"<other>")]


# -- 2. TLS: STARTTLS and implicit TLS with AUTH, client certificates ------------------------------


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_same_as_djangos_over_tls_with_auth(smtp_server_factory: ServerFactory, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, tls: str) -> None:
    server = smtp_server_factory(tls=tls, users={"user": "password"})
    assert server.ca_file is not None
    # Django's ssl.create_default_context() reads it when the backend's ssl_context is first made.
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    with tls_settings(server):
        ours, theirs = side_by_side(server, via_alternatives_and_attachments, tmp_path)
        side_by_side(server, via_message_send, tmp_path)
    for received in (*ours, *theirs):
        assert received.tls and received.auth_user == "user"
    assert server.connections == 4


def test_certificates_are_verified_by_both(smtp_server_factory: ServerFactory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SSL_CERT_FILE Django's backend refuses the test CA; without ca_file ours does."""
    server = smtp_server_factory(tls="starttls", users={"user": "password"})
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with tls_settings(server, SYNCSMTP={}):
        with pytest.raises(syncsmtp.CertificateError):
            mail.get_connection(OURS).send_messages([simple_message()])
        with pytest.raises(ssl.SSLCertVerificationError):
            mail.get_connection(DJANGOS).send_messages([simple_message()])
    assert server.outbox == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_a_certificate_from_the_trusted_ca_but_not_for_the_host_is_refused(mode: str) -> None:
    """The certificate chains to SYNCSMTP's ca_file, but its only name is "*"."""
    with private_ca() as ca:
        cert, key = ca.leaf(CertificateShape("localhost", ("dns:*",)), "django-star")
        with tls_peer(cert, key, mode) as peer, override_settings(
            EMAIL_HOST="localhost", EMAIL_PORT=peer.port, EMAIL_USE_TLS=mode == "starttls",
            EMAIL_USE_SSL=mode == "implicit", EMAIL_HOST_USER="user", EMAIL_HOST_PASSWORD="password",
            EMAIL_TIMEOUT=10, SYNCSMTP={"ca_file": ca.ca_file},
        ), pytest.raises(syncsmtp.CertificateError):
            mail.get_connection(OURS).send_messages([simple_message()])
    assert peer.after_tls == []  # no EHLO, no AUTH


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_client_certificate(smtp_server_factory: ServerFactory, tls: str) -> None:
    server = smtp_server_factory(tls=tls, require_client_certificate=True)
    with server_settings(server, EMAIL_USE_TLS=tls == "starttls", EMAIL_USE_SSL=tls == "implicit",
                         EMAIL_SSL_CERTFILE=server.client_cert_file, EMAIL_SSL_KEYFILE=server.client_key_file,
                         SYNCSMTP={"ca_file": server.ca_file}):
        assert mail.send_mail("with cert", "body\n", "ann@example.com", ["bob@example.com"]) == 1
        with pytest.raises(syncsmtp.TLSFailedError):  # no certificate: the handshake fails
            mail.get_connection(ssl_certfile="", ssl_keyfile="").send_messages([simple_message()])
    (received,) = server.wait_for(1)
    assert received.tls and received.client_certificate == "syncsmtp test client"


@pytest.mark.parametrize("fail_silently", [False, True])
def test_certificate_files_are_read_only_for_tls(smtp_server_factory: ServerFactory, tmp_path: Path,
                                                 fail_silently: bool) -> None:
    """As in Django's backend: ignored without TLS; with TLS, a missing one is an error when the
    backend opens (ImproperlyConfigured, whatever fail_silently says), not when it is made."""
    missing = str(tmp_path / "missing.pem")
    server = smtp_server_factory(tls="starttls")
    with server_settings(server, EMAIL_SSL_CERTFILE=missing, EMAIL_SSL_KEYFILE=missing,
                         SYNCSMTP={"ca_file": server.ca_file}):
        plaintext = mail.get_connection(OURS, use_tls=False, fail_silently=fail_silently)
        assert (plaintext.ssl_certfile, plaintext.ssl_keyfile) == (missing, missing)
        assert plaintext.policy.client_cert is None and plaintext.policy.client_key is None
        assert plaintext.send_messages([simple_message("no tls")]) == 1
        with_tls = mail.get_connection(OURS, use_tls=True, fail_silently=fail_silently)
        assert with_tls.ssl_certfile == missing
        with pytest.raises(ImproperlyConfigured, match=r"client_cert .* not a readable file"):
            with_tls.open()
        with pytest.raises(ImproperlyConfigured, match=r"client_cert .* not a readable file"):
            with_tls.send_messages([simple_message("tls")])
        assert with_tls.connection is None
        with override_settings(EMAIL_USE_TLS=True):
            assert syncsmtp_check_ids() == ["syncsmtp.E001"]
    assert [m.message["Subject"] for m in server.wait_for(1)] == ["no tls"]
    assert server.connections == 1


# -- 3. counts and connections (the same for both backends) ----------------------------------------

BOTH = pytest.mark.parametrize("backend", [OURS, DJANGOS], ids=["syncsmtp", "django"])


@BOTH
def test_send_messages_counts_and_skips_messages_without_recipients(
    smtp_server_factory: ServerFactory, backend: str
) -> None:
    server = smtp_server_factory(tls="none")
    nobody = mail.EmailMessage("nobody", "body\n", "ann@example.com", [])
    with server_settings(server):
        connection = mail.get_connection(backend)
        assert connection.send_messages([]) == 0
        assert server.connections == 0, "an empty list connects to nothing"
        assert connection.send_messages([simple_message("a"), nobody, simple_message("b")]) == 2
        assert connection.send_messages([nobody]) == 0
    assert [m.message["Subject"] for m in server.wait_for(2)] == ["a", "b"]


@BOTH
def test_one_connection_between_open_and_close(smtp_server_factory: ServerFactory, backend: str) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server), mail.get_connection(backend) as connection:
        assert connection.send_messages([simple_message("1"), simple_message("2")]) == 2
        assert connection.send_messages([simple_message("3")]) == 1
        assert mail.EmailMessage("4", "x\n", "ann@example.com", ["bob@example.com"],
                                 connection=connection).send() == 1
    assert [m.message["Subject"] for m in server.wait_for(4)] == ["1", "2", "3", "4"]
    assert server.connections == 1
    (commands,) = server.commands
    assert commands[-1].upper() == b"QUIT", "close() at the end of the with block sends QUIT"
    assert sum(line.upper().startswith(b"MAIL FROM") for line in commands) == 4


@pytest.mark.parametrize(("timeout", "expected"), [(42, 42.0), (None, 60.0)])
def test_the_open_connection_has_a_timeout(smtp_server_factory: ServerFactory, timeout: float | None,
                                           expected: float) -> None:
    """Code reads ``backend.connection.timeout`` from Django's (smtplib's socket time-out);
    here it is the deadline of each message."""
    server = smtp_server_factory(tls="none")
    with server_settings(server, EMAIL_TIMEOUT=None):
        backend = mail.get_connection(OURS, timeout=timeout)
        assert backend.open() is True
        try:
            assert isinstance(backend.connection, syncsmtp.django.Connection)
            assert isinstance(backend.connection, syncsmtp.Mailer)
            assert backend.connection.timeout == expected
            assert backend.send_messages([simple_message()]) == 1
        finally:
            backend.close()
    assert backend.connection is None and server.connections == 1


@BOTH
def test_open_and_close(smtp_server_factory: ServerFactory, backend: str) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        connection = mail.get_connection(backend)
        assert connection.open() is True
        assert connection.open() is False
        assert server.connections == 1 and connection.connection is not None
        assert connection.send_messages([simple_message()]) == 1
        connection.close()
        connection.close()
        assert connection.connection is None
        assert server.commands[0][-1].upper() == b"QUIT"
        assert connection.open() is True, "opens again after close()"
        connection.close()
    assert server.connections == 2 and len(server.outbox) == 1


# -- 4. failures: fail_silently, compared with Django's backend ------------------------------------


def raised_by_both(
    ours: type[BaseException], theirs: type[BaseException], message: mail.EmailMessage | None = None,
    **arguments: Any,
) -> tuple[BaseException, BaseException]:
    """With fail_silently=True both backends send 0 and raise nothing; without it each raises its type."""
    message = message or simple_message()
    assert mail.get_connection(OURS, fail_silently=True, **arguments).send_messages([message]) == 0
    assert mail.get_connection(DJANGOS, fail_silently=True, **arguments).send_messages([message]) == 0
    with pytest.raises(ours) as caught_ours:
        mail.get_connection(OURS, **arguments).send_messages([message])
    with pytest.raises(theirs) as caught_theirs:
        mail.get_connection(DJANGOS, **arguments).send_messages([message])
    return caught_ours.value, caught_theirs.value


def test_server_not_listening() -> None:
    with override_settings(EMAIL_HOST="127.0.0.1", EMAIL_PORT=closed_port()):
        assert mail.send_mail("s", "b", "ann@example.com", ["bob@example.com"], fail_silently=True) == 0
        ours, _ = raised_by_both(syncsmtp.ConnectError, ConnectionRefusedError)
    assert isinstance(ours, ConnectionError), "`except ConnectionError` catches both"


def test_wrong_password(smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp_server_factory(tls="starttls", users={"user": "password"})
    assert server.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    with tls_settings(server, EMAIL_HOST_PASSWORD="wrong"):
        ours, _ = raised_by_both(syncsmtp.AuthDeclinedError, smtplib.SMTPAuthenticationError)
    assert isinstance(ours, syncsmtp.AuthDeclinedError) and ours.reply is not None
    assert ours.reply.code == 535 and "wrong" not in "\n".join(ours.transcript)
    assert server.outbox == []


def test_starttls_required_but_not_offered(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server, EMAIL_USE_TLS=True):
        raised_by_both(syncsmtp.TLSRequiredError, smtplib.SMTPNotSupportedError)
    assert server.outbox == []


def _refuse_recipient(server: SMTPTestServer) -> None:
    server.refuse_recipient("bob@example.com")


REFUSALS: dict[str, tuple[Callable[[SMTPTestServer], None], type[BaseException], type[BaseException]]] = {
    "every recipient": (_refuse_recipient, syncsmtp.RecipientsRefused, smtplib.SMTPRecipientsRefused),
    "sender": (lambda server: server.fail("mail", 550, "5.7.1 Sender rejected"),
               syncsmtp.SenderRefused, smtplib.SMTPSenderRefused),
    "data": (lambda server: server.fail("end-of-data", 554, "5.6.0 Content rejected"),
             syncsmtp.MessageRefused, smtplib.SMTPDataError),
    "lost after data": (lambda server: server.drop("end-of-data"),
                        syncsmtp.ConnectionLostError, smtplib.SMTPServerDisconnected),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_refused_or_lost_message(smtp_server_factory: ServerFactory, refusal: str) -> None:
    arrange, ours_raises, theirs_raises = REFUSALS[refusal]
    server = smtp_server_factory(tls="none")
    arrange(server)
    with server_settings(server):
        ours, _ = raised_by_both(ours_raises, theirs_raises)
    assert isinstance(ours, syncsmtp.SMTPError)
    if refusal == "every recipient":
        assert isinstance(ours, syncsmtp.RecipientsRefused)
        assert ours.refused["bob@example.com"].code == 550
    if refusal == "lost after data":
        assert ours.maybe_delivered and len(server.outbox) == 4  # the server had every copy
    else:
        assert server.outbox == []


def test_one_of_two_recipients_refused_counts_as_sent(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.refuse_recipient("gone@example.com")
    message = simple_message(to=("bob@example.com", "gone@example.com"))
    with server_settings(server):
        assert mail.get_connection(OURS).send_messages([message]) == 1
        assert mail.get_connection(DJANGOS).send_messages([message]) == 1
    assert [m.recipients for m in server.wait_for(2)] == [("bob@example.com",)] * 2


def test_timeout_after_the_data(smtp_server_factory: ServerFactory) -> None:
    """A time-out while sending passes silently with fail_silently, as in Django's
    backend (smtplib turns the socket time-out into SMTPServerDisconnected, an
    SMTPException); otherwise it is a SendTimeout that says the message may have
    been delivered."""
    server = smtp_server_factory(tls="none")
    server.stall("end-of-data")
    with server_settings(server, EMAIL_TIMEOUT=1):
        started = time.monotonic()
        assert mail.get_connection(OURS, fail_silently=True).send_messages([simple_message()]) == 0
        with pytest.raises(syncsmtp.SendTimeout) as caught:
            mail.get_connection(OURS).send_messages([simple_message()])
        assert time.monotonic() - started < 8
        assert caught.value.stage == "end-of-data" and caught.value.maybe_delivered
        assert isinstance(caught.value, TimeoutError)
        assert mail.get_connection(DJANGOS, fail_silently=True, timeout=0.5).send_messages(
            [simple_message()]) == 0
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            mail.get_connection(DJANGOS, timeout=0.5).send_messages([simple_message()])
    assert len(server.outbox) == 4  # the server had the data each time


# -- 5. configuration ------------------------------------------------------------------------------


def test_password_without_tls_is_refused_unless_allowed(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", users={"user": "password"}, auth_requires_tls=False)
    with server_settings(server, EMAIL_HOST_USER="user", EMAIL_HOST_PASSWORD="password"):
        with pytest.raises(ImproperlyConfigured, match="allow_plaintext_auth"):
            mail.get_connection()
        with pytest.raises(ImproperlyConfigured):
            mail.send_mail("s", "b", "ann@example.com", ["bob@example.com"], fail_silently=True)
        with override_settings(SYNCSMTP={"allow_plaintext_auth": True}):
            assert mail.send_mail("plaintext auth", "b\n", "ann@example.com", ["bob@example.com"]) == 1
    (received,) = server.wait_for(1)
    assert received.auth_user == "user" and not received.tls


def test_email_url_with_starttls_and_auth(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="starttls", users={"user": "password"})
    assert server.ca_file is not None
    url = f"smtp+starttls://user:password@127.0.0.1:{server.port}?ca_file={quote(server.ca_file)}"
    # The EMAIL_* settings are not read when EMAIL_URL is set.
    with override_settings(EMAIL_URL=url, EMAIL_HOST="127.0.0.1", EMAIL_PORT=closed_port()):
        assert mail.send_mail("via url", "b\n", "ann@example.com", ["bob@example.com"]) == 1
    (received,) = server.wait_for(1)
    assert received.tls and received.auth_user == "user"


@pytest.mark.parametrize(("url", "syncsmtp_setting", "port"), [
    ("smtp://mail.example.com", {"tls": "implicit"}, 465),
    ("smtp://mail.example.com", {}, 587),
    ("smtp+plain://mail.example.com", {}, 25),
    ("smtp://mail.example.com:2525", {"tls": "implicit"}, 2525),
])
def test_a_url_without_a_port_takes_the_tls_mode_s_default(url: str, syncsmtp_setting: dict[str, str],
                                                          port: int) -> None:
    with override_settings(EMAIL_URL=url, SYNCSMTP=syncsmtp_setting):
        assert mail.get_connection(OURS).policy.port == port


def test_constructor_arguments_override_settings(smtp_server_factory: ServerFactory) -> None:
    configured = smtp_server_factory(tls="none")
    chosen = smtp_server_factory(tls="none")
    with server_settings(configured):
        connection = mail.get_connection(host="127.0.0.1", port=chosen.port)
        assert connection.send_messages([simple_message("a")]) == 1
    with override_settings(EMAIL_URL=f"smtp+plain://127.0.0.1:{configured.port}"):
        assert mail.get_connection(port=chosen.port).send_messages([simple_message("b")]) == 1
        assert mail.send_mail("c", "x\n", "ann@example.com", ["bob@example.com"]) == 1
    tls_server = smtp_server_factory(tls="starttls", users={"user": "password"})
    with server_settings(tls_server, SYNCSMTP={"ca_file": tls_server.ca_file}):  # no TLS nor user set
        connection = mail.get_connection(use_tls=True, username="user", password="password")
        assert connection.send_messages([simple_message("d")]) == 1
    assert [m.message["Subject"] for m in chosen.wait_for(2)] == ["a", "b"]
    assert [m.message["Subject"] for m in configured.wait_for(1)] == ["c"]
    (received,) = tls_server.wait_for(1)
    assert received.tls and received.auth_user == "user"


def test_bad_syncsmtp_settings_are_improperly_configured() -> None:
    with override_settings(SYNCSMTP={"ca_file_typo": "/x"}), \
            pytest.raises(ImproperlyConfigured, match="ca_file_typo"):
        mail.get_connection()
    with override_settings(SYNCSMTP=[("verify", False)]), pytest.raises(ImproperlyConfigured):
        mail.get_connection()
    with override_settings(EMAIL_URL="ftp://example.com"), pytest.raises(ImproperlyConfigured):
        mail.get_connection()


@pytest.mark.parametrize("backend", [OURS, DJANGOS], ids=["syncsmtp", "django"])
def test_use_tls_and_use_ssl_together_is_a_value_error(backend: str) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        mail.get_connection(backend, use_tls=True, use_ssl=True)
    with override_settings(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True), \
            pytest.raises(ValueError, match="mutually exclusive"):
        mail.get_connection(backend)


# -- 6. system checks ------------------------------------------------------------------------------


def syncsmtp_check_ids() -> list[str]:
    return [found.id for found in checks.run_checks() if found.id and found.id.startswith("syncsmtp.")]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"EMAIL_HOST_USER": "user", "EMAIL_HOST_PASSWORD": "secret"}, ["syncsmtp.E001"]),
    ({"SYNCSMTP": {"no_such_option": 1}}, ["syncsmtp.E001"]),
    ({"EMAIL_URL": "smtp+bogus://example.com"}, ["syncsmtp.E001"]),
    ({"EMAIL_USE_TLS": True, "EMAIL_USE_SSL": True}, ["syncsmtp.E001"]),
    ({"EMAIL_HOST_USER": "user", "EMAIL_HOST_PASSWORD": "secret", "SYNCSMTP": {"allow_plaintext_auth": True}},
     ["syncsmtp.W001"]),
    ({"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": True, "SYNCSMTP": {"verify": False}},
     ["syncsmtp.W002"]),
    ({"EMAIL_HOST": "smtp.example.com"}, ["syncsmtp.W003"]),
    ({"EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_USER": "user", "EMAIL_HOST_PASSWORD": "secret",
      "SYNCSMTP": {"allow_plaintext_auth": True}}, ["syncsmtp.W001", "syncsmtp.W003"]),
    ({"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": True, "EMAIL_HOST_USER": "user",
      "EMAIL_HOST_PASSWORD": "secret"}, []),
    ({"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_SSL": True, "EMAIL_PORT": 465}, []),
    ({"EMAIL_HOST": "localhost"}, []),
    ({"EMAIL_HOST": "127.0.0.1"}, []),
    ({"EMAIL_HOST": "::1"}, []),
    ({"EMAIL_BACKEND": DJANGOS, "EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_USER": "user",
      "EMAIL_HOST_PASSWORD": "secret", "SYNCSMTP": {"verify": False}}, []),
    ({"EMAIL_BACKEND": "syncsmtp.django.backend.EmailBackend", "EMAIL_HOST": "smtp.example.com"},
     ["syncsmtp.W003"]),
], ids=["password-without-tls", "unknown-key", "bad-url", "tls-and-ssl", "plaintext-auth-allowed",
        "verify-false", "plaintext-remote", "plaintext-auth-remote", "starttls-auth", "implicit-tls",
        "localhost", "loopback-v4", "loopback-v6", "other-backend", "full-backend-path"])
def test_system_checks(overrides: dict[str, Any], expected: list[str]) -> None:
    base = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": 25, "EMAIL_USE_TLS": False, "EMAIL_USE_SSL": False,
            "EMAIL_HOST_USER": "", "EMAIL_HOST_PASSWORD": "", "SYNCSMTP": {}}
    with override_settings(**{**base, **overrides}):
        assert syncsmtp_check_ids() == expected


def test_manage_py_check() -> None:
    out = StringIO()
    with override_settings(EMAIL_HOST="127.0.0.1", EMAIL_HOST_USER="", EMAIL_HOST_PASSWORD=""):
        call_command("check", stdout=out, stderr=StringIO())
    assert "no issues" in out.getvalue()
    with override_settings(EMAIL_HOST_USER="user", EMAIL_HOST_PASSWORD="secret"), \
            pytest.raises(SystemCheckError, match=r"syncsmtp\.E001"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


# -- 7. threads ------------------------------------------------------------------------------------


def run_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    failures: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            work(number)
        except BaseException as error:  # reported by the test
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return failures


def test_threads_each_with_their_own_backend(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")

    def work(number: int) -> None:
        for index in range(20):
            assert mail.send_mail(f"t{number}-m{index}", "b\n", "ann@example.com", ["bob@example.com"]) == 1

    with server_settings(server):
        assert run_threads(8, work) == []
    subjects = [m.message["Subject"] for m in server.wait_for(160)]
    assert sorted(subjects) == sorted(f"t{n}-m{i}" for n in range(8) for i in range(20))
    assert server.connections == 160


def test_threads_sharing_one_open_backend(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server):
        connection = mail.get_connection()
        assert connection.open() is True

        def work(number: int) -> None:
            for index in range(10):
                assert connection.send_messages([simple_message(f"t{number}-m{index}")]) == 1

        try:
            assert run_threads(8, work) == []
        finally:
            connection.close()
    subjects = [m.message["Subject"] for m in server.wait_for(80)]
    assert sorted(subjects) == sorted(f"t{n}-m{i}" for n in range(8) for i in range(10))
    assert server.connections == 1


def test_views_under_djangos_threaded_wsgi_server(smtp_server_factory: ServerFactory) -> None:
    """The server runserver uses: a thread per request, each view sending a mail."""
    from urllib.request import urlopen

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    server = smtp_server_factory(tls="none")
    web = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler, allow_reuse_address=True)
    web.set_app(get_wsgi_application())
    serving = threading.Thread(target=web.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    replies: list[str] = []

    def work(number: int) -> None:
        for index in range(4):
            url = f"http://127.0.0.1:{web.server_port}/send/{number * 4 + index}"
            with urlopen(url, timeout=30) as reply:
                replies.append(reply.read().decode())

    try:
        with server_settings(server):
            assert run_threads(8, work) == []
    finally:
        web.shutdown()
        web.server_close()
        serving.join(10)
    assert replies == ["sent 1"] * 32
    subjects = sorted(int(m.message["Subject"].split()[1]) for m in server.wait_for(32))
    assert subjects == list(range(32))


# -- 8. fork (gunicorn --preload) ------------------------------------------------------------------

FORK_SCRIPT = '''
import os, sys
import django
from django.conf import settings

settings.configure(EMAIL_BACKEND="syncsmtp.django.EmailBackend", EMAIL_HOST="127.0.0.1",
                   EMAIL_PORT=int(sys.argv[1]), EMAIL_TIMEOUT=10, DEFAULT_FROM_EMAIL="master@example.com")
django.setup()
from django.core import mail

def message(subject):
    return mail.EmailMessage(subject, "body", to=["worker@example.com"])

backend = mail.get_connection()         # made and opened in the master, before the fork
assert backend.open() is True
assert backend.send_messages([message("parent-1")]) == 1
pid = os.fork()
if pid == 0:
    sent = backend.send_messages([message("child")])
    sys.exit(0 if sent == 1 else 3)     # a normal interpreter exit, backend left open
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert backend.send_messages([message("parent-2")]) == 1
backend.close()
print("ok")
'''


def test_backend_used_after_fork(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = smtp_server_factory(tls="none")
    script = tmp_path / "preload.py"
    script.write_text(FORK_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    environment["PYTHONPATH"] = str(REPO)  # this checkout's syncsmtp, whatever is installed
    out = subprocess.run([sys.executable, str(script), str(server.port)], capture_output=True, text=True,
                         timeout=60, env=environment, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert sorted(m.message["Subject"] for m in server.wait_for(3)) == ["child", "parent-1", "parent-2"]
    # The child opened a connection of its own; the parent kept using its first one.
    assert server.connections == 2
    mails = [sum(line.startswith(b"MAIL FROM") for line in commands) for commands in server.commands]
    assert mails == [2, 1]


# -- 9. a real Postfix -----------------------------------------------------------------------------


@pytest.mark.postfix
def test_postfix_delivery(fresh_postfix: PostfixInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", fresh_postfix.ca_file)
    message = mail.EmailMultiAlternatives(
        "Über Postfix", "Grüße aus Django.\n.a dot line\n", "Ann <ann@example.com>", ["rcpt@example.com"],
        headers=FIXED,
    )
    message.attach_alternative("<p>Grüße</p>", "text/html")
    message.attach("data.bin", bytes(range(256)), "application/octet-stream")
    with override_settings(
        EMAIL_HOST=fresh_postfix.host, EMAIL_PORT=fresh_postfix.port, EMAIL_USE_TLS=True, EMAIL_USE_SSL=False,
        EMAIL_HOST_USER=fresh_postfix.username, EMAIL_HOST_PASSWORD=fresh_postfix.password,
        EMAIL_TIMEOUT=30, SYNCSMTP={"ca_file": fresh_postfix.ca_file},
    ):
        assert mail.get_connection(OURS).send_messages([message]) == 1
        first = fresh_postfix.wait_for(1)[0]
        assert mail.get_connection(DJANGOS).send_messages([message]) == 1
    delivered = fresh_postfix.wait_for(2)
    assert delivered[0] == first
    sent = message.message().as_bytes()  # LF line ends, as Postfix stores them
    for data in delivered:
        head, _, _ = data.partition(b"\n\n")
        assert b"ESMTPSA" in head, "Postfix saw TLS and AUTH"
        # Postfix prepends its own headers; the message follows as sent.
        original = data[data.index(b"Content-Type: multipart/mixed"):]
        assert normalise(original) == normalise(sent)
    parsed = email.message_from_bytes(delivered[0], policy=email.policy.default)
    assert parsed["Subject"] == "Über Postfix"


# -- 10. Django's test outbox ----------------------------------------------------------------------


@pytest.fixture
def django_test_environment() -> Iterator[None]:
    """What Django's test runner does around every test run."""
    setup_test_environment()
    try:
        yield
    finally:
        teardown_test_environment()


def test_locmem_outbox_in_tests(smtp_server_factory: ServerFactory, django_test_environment: None) -> None:
    """The documented way to test: Django's test environment swaps EMAIL_BACKEND for
    locmem whatever the project sets, so nothing reaches a server."""
    server = smtp_server_factory(tls="none")
    assert settings.EMAIL_BACKEND == "django.core.mail.backends.locmem.EmailBackend"
    with server_settings(server):
        assert mail.send_mail("captured", "body\n", "ann@example.com", ["bob@example.com"]) == 1
    assert [message.subject for message in mail.outbox] == ["captured"]
    assert server.connections == 0


def test_locmem_backend_by_override_settings(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with server_settings(server, EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        try:
            assert mail.send_mail("captured", "body\n", "ann@example.com", ["bob@example.com"]) == 1
            assert [message.to for message in mail.outbox] == [["bob@example.com"]]
        finally:
            del mail.outbox
    assert server.connections == 0


# -- 11. error reports: the debug page and the report mailed to ADMINS show no password ------------

# Reports quote the source lines around each frame, so no line holds the password; every form of
# it (as set, percent-encoded in a URL, HTML-escaped) holds TOKEN.
TOKEN = secrets.token_hex(8)
SECRET = f"pw:{TOKEN}@/"
SOURCES = ["EMAIL_HOST_PASSWORD", "SYNCSMTP-password", "EMAIL_URL", "SYNCSMTP-url"]
DEBUG = pytest.mark.parametrize("debug", [True, False], ids=["debug-page", "admins-report"])


def credential_settings(source: str, port: int, *, ca_file: str | None = None) -> dict[str, Any]:
    """Settings that give syncsmtp the user ``user`` and SECRET through ``source``: over
    STARTTLS trusting ``ca_file`` when it is given, else over plaintext (ImproperlyConfigured)."""
    trust = {"ca_file": ca_file} if ca_file else {}
    url = f"{'smtp' if ca_file else 'smtp+plain'}://user:{quote(SECRET, safe='')}@127.0.0.1:{port}"
    url += f"?ca_file={quote(ca_file)}" if ca_file else ""
    found: dict[str, Any] = {
        "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": port, "EMAIL_USE_TLS": bool(ca_file), "EMAIL_USE_SSL": False,
        "EMAIL_HOST_USER": "", "EMAIL_HOST_PASSWORD": "", "SYNCSMTP": trust,
    }
    if source == "EMAIL_HOST_PASSWORD":
        found.update(EMAIL_HOST_USER="user", EMAIL_HOST_PASSWORD=SECRET)
    elif source == "SYNCSMTP-password":
        found["SYNCSMTP"] = {**trust, "username": "user", "password": SECRET}
    elif source == "EMAIL_URL":
        found["EMAIL_URL"] = url
    else:
        found["SYNCSMTP"] = {"url": url}
    return found


def error_reports(expected: type[BaseException], fail: Callable[[], object]) -> list[str]:
    """The exception ``fail()`` raises, as Django reports it: the HTML debug page with DEBUG,
    else the plain-text and HTML reports AdminEmailHandler mails to ADMINS."""
    request = RequestFactory().get("/send/1")
    try:
        fail()
    except expected:
        reporter = ExceptionReporter(request, *sys.exc_info(), is_email=not settings.DEBUG)
        return [reporter.get_traceback_html(), reporter.get_traceback_text()]
    pytest.fail(f"no {expected.__name__}")


def assert_no_password(reports: list[str]) -> None:
    for report in reports:
        where = report.find(TOKEN)
        assert where < 0, f"the password is in the report: ...{report[max(0, where - 300):where + 40]}"


def in_a_view() -> object:
    return send_view(RequestFactory().get("/send/1"), 1)


@DEBUG
@pytest.mark.parametrize("source", SOURCES)
def test_credentials_without_tls_reports_hide_the_password(source: str, debug: bool) -> None:
    with override_settings(**credential_settings(source, closed_port()), DEBUG=debug):
        reports = error_reports(ImproperlyConfigured, in_a_view)
    assert_no_password(reports)
    assert "allow_plaintext_auth" in reports[1], "the report still says what is wrong"


@DEBUG
def test_constructor_password_is_hidden_from_reports(debug: bool) -> None:
    """The backend made directly (get_connection()'s own frame holds its keyword arguments)."""
    from syncsmtp.django import EmailBackend

    def make() -> object:
        return EmailBackend(username="user", password=SECRET)

    with override_settings(EMAIL_PORT=closed_port(), EMAIL_USE_TLS=False, DEBUG=debug):
        assert_no_password(error_reports(ImproperlyConfigured, make))


@DEBUG
@pytest.mark.parametrize("failure", ["auth-declined", "recipient-refused"])
@pytest.mark.parametrize("source", SOURCES)
def test_smtp_error_in_a_view_reports_hide_the_password(smtp_server_factory: ServerFactory, source: str,
                                                        failure: str, debug: bool) -> None:
    declined = failure == "auth-declined"  # else logged in, then refused
    server = smtp_server_factory(tls="starttls", users={"user": "other" if declined else SECRET})
    server.refuse_recipient("visitor@example.com")
    expected = syncsmtp.AuthDeclinedError if declined else syncsmtp.RecipientsRefused
    assert server.ca_file is not None
    with override_settings(**credential_settings(source, server.port, ca_file=server.ca_file), DEBUG=debug):
        assert_no_password(error_reports(expected, in_a_view))


@DEBUG
@pytest.mark.parametrize("source", ["EMAIL_URL", "SYNCSMTP-url"])
def test_any_error_report_hides_the_password_in_a_url(source: str, debug: bool) -> None:
    """Every report lists the settings, whether or not mail was sent: the URL shows without its password."""
    with override_settings(**credential_settings(source, 587, ca_file=__file__), DEBUG=debug):
        reports = error_reports(ZeroDivisionError, lambda: 1 / 0)
    assert_no_password(reports)
    assert "smtp://user:********@127.0.0.1:587?ca_file=" in reports[1]


@pytest.mark.parametrize("source", SOURCES)
def test_hidden_settings_keep_their_value(smtp_server_factory: ServerFactory, source: str) -> None:
    server = smtp_server_factory(tls="starttls", users={"user": SECRET})
    assert server.ca_file is not None
    with override_settings(**credential_settings(source, server.port, ca_file=server.ca_file)):
        assert mail.send_mail("hidden", "b\n", "ann@example.com", ["bob@example.com"]) == 1
        assert mail.get_connection().policy.password == SECRET
    (received,) = server.wait_for(1)
    assert received.auth_user == "user"


STARTUP_SCRIPT = """
import sys
import django
from django.conf import settings
from django.views.debug import ExceptionReporter

settings.configure(DEBUG=True, SECRET_KEY="not secret", EMAIL_BACKEND="syncsmtp.django.EmailBackend",
                   EMAIL_URL=sys.argv[1], SYNCSMTP={"url": sys.argv[1]}, INSTALLED_APPS=["syncsmtp.django"])
django.setup()
try:
    1 / 0                              # an error before any mail is sent
except ZeroDivisionError:
    reporter = ExceptionReporter(None, *sys.exc_info())
    print(reporter.get_traceback_html())
    print(reporter.get_traceback_text())
"""


def test_urls_are_hidden_from_startup(tmp_path: Path) -> None:
    """With the app installed, settings.py's URLs are hidden before the backend is first used."""
    script = tmp_path / "startup.py"
    script.write_text(STARTUP_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    environment["PYTHONPATH"] = str(REPO)
    url = f"smtp://user:{quote(SECRET, safe='')}@smtp.example.com:587"
    out = subprocess.run([sys.executable, str(script), url], capture_output=True,
                         text=True, timeout=60, env=environment, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_no_password([out.stdout])
    assert "EMAIL_URL = 'smtp://user:********@smtp.example.com:587'" in out.stdout


def test_password_with_an_unencoded_slash_in_email_url() -> None:
    """A URL that does not parse: neither check E001 nor the error report quotes its userinfo."""
    with override_settings(EMAIL_URL=f"smtp://user:{TOKEN}/x@127.0.0.1:587"):
        problems = [found for found in checks.run_checks() if found.id == "syncsmtp.E001"]
        assert len(problems) == 1
        assert TOKEN not in f"{problems[0].msg} {problems[0].hint}"
        assert_no_password(error_reports(ImproperlyConfigured, in_a_view))
