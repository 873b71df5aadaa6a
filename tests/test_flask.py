"""syncsmtp.flask in real Flask apps, over real SMTP to the project's test server.

Each app's views send through the extension as an application does; the
side-by-side tests send the same input through Flask-Mail 0.10 to the same
server and compare what the server received: envelope, headers, MIME
structure and decoded content. Where the two differ on purpose, the
comparison says exactly how.
"""

from __future__ import annotations

import email.charset
import email.message
import email.utils
import logging
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, request
from tls_peer import CertificateShape, private_ca, tls_peer

import syncsmtp
import syncsmtp.flask
from syncsmtp.flask import BadHeaderError, Mail, MailState, Message
from syncsmtp.testing import ReceivedMessage, SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
Build = Callable[[ModuleType], list[Any]]
AppFactory = Callable[..., Flask]


# -- helpers ---------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def make_app() -> Iterator[AppFactory]:
    """Apps with a ``POST /send`` view that sends through a ``Mail()`` set up with
    ``init_app``, as an app factory does. The view sends the messages ``build``
    makes (with the module it is given: syncsmtp.flask or flask_mail), or one
    message with the form's subject. Apps point at ``server`` (plaintext, no
    AUTH) unless the config says otherwise; their connections are closed after
    the test."""
    made: list[Flask] = []

    def make(server: SMTPTestServer | None = None, *, extension: ModuleType = syncsmtp.flask,
             build: Build | None = None, **config: Any) -> Flask:
        app = Flask(f"app{len(made)}")
        app.config.update(
            MAIL_SERVER="127.0.0.1", MAIL_PORT=server.port if server else closed_port(),
            MAIL_DEFAULT_SENDER="site@example.com", PROPAGATE_EXCEPTIONS=True,
        )
        app.config.update(config)
        mail = extension.Mail()
        mail.init_app(app)

        @app.post("/send")
        def send() -> str:
            if build is not None:
                messages = build(extension)
            else:
                messages = [extension.Message(request.form["subject"], body="body\n",
                                              recipients=request.form.getlist("to") or ["bob@example.com"])]
            for message in messages:
                mail.send(message)
            return f"sent {len(messages)}"

        made.append(app)
        return app

    yield make
    for app in made:
        state = app.extensions.get("mail")
        if isinstance(state, MailState):
            state.close()


def post(app: Flask, subject: str = "hello", **form: Any) -> str:
    response = app.test_client().post("/send", data={"subject": subject, **form})
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


def subjects(received: list[ReceivedMessage]) -> list[str]:
    return [str(message.message["Subject"]) for message in received]


def mails_per_connection(server: SMTPTestServer) -> list[int]:
    return [sum(line.upper().startswith(b"MAIL FROM") for line in lines) for lines in server.commands]


@pytest.fixture
def flask_mail() -> Iterator[ModuleType]:
    """Flask-Mail, with the change importing it makes to the email package
    (UTF-8 bodies sent as 8bit) in force for the test only."""
    before = email.charset.CHARSETS["utf-8"]
    module = pytest.importorskip("flask_mail")
    email.charset.add_charset("utf-8", email.charset.SHORTEST, None, "utf-8")
    try:
        yield module
    finally:
        email.charset.CHARSETS["utf-8"] = before


# -- 1. sending from a view; each MAIL_* key ---------------------------------------------------------


def test_a_view_sends_over_plaintext(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    assert post(app, "first", to=["bob@example.com", "carl@example.com"]) == "sent 1"
    (received,) = server.wait_for(1)
    assert received.sender == "site@example.com"
    assert received.recipients == ("bob@example.com", "carl@example.com")
    assert not received.tls and received.auth_user is None
    parsed = received.message
    assert parsed["Subject"] == "first" and parsed["From"] == "site@example.com"
    assert parsed["To"] == "bob@example.com, carl@example.com"
    assert parsed.get_content_type() == "text/plain" and parsed.get_content() == "body\r\n"
    assert parsed["Message-ID"] and parsed["Date"]


def test_mail_use_tls_is_starttls_with_auth(smtp_server: SMTPTestServer, make_app: AppFactory) -> None:
    app = make_app(smtp_server, MAIL_USE_TLS=True, MAIL_USERNAME="user", MAIL_PASSWORD="password",
                   SYNCSMTP={"ca_file": smtp_server.ca_file})
    post(app)
    (received,) = smtp_server.wait_for(1)
    assert received.tls and received.auth_user == "user"


def test_mail_use_ssl_is_implicit_tls(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="implicit", users={"user": "password"})
    app = make_app(server, MAIL_USE_SSL=True, MAIL_USERNAME="user", MAIL_PASSWORD="password",
                   SYNCSMTP={"ca_file": server.ca_file})
    post(app)
    (received,) = server.wait_for(1)
    assert received.tls and received.auth_user == "user"
    assert app.extensions["mail"].policy.tls == "implicit"


def test_mail_use_tls_requires_starttls(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server, MAIL_USE_TLS=True)
    with pytest.raises(syncsmtp.TLSRequiredError):
        post(app)
    assert server.outbox == []


def test_certificates_are_verified(smtp_server: SMTPTestServer, make_app: AppFactory) -> None:
    """Flask-Mail's smtplib.starttls() verifies nothing; syncsmtp does, unless told otherwise."""
    app = make_app(smtp_server, MAIL_USE_TLS=True, MAIL_USERNAME="user", MAIL_PASSWORD="password")
    with pytest.raises(syncsmtp.CertificateError):
        post(app)
    assert smtp_server.outbox == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_a_certificate_from_the_trusted_ca_but_not_for_the_host_is_refused(make_app: AppFactory,
                                                                             mode: str) -> None:
    with private_ca() as ca:
        cert, key = ca.leaf(CertificateShape("localhost"), "flask-cn-only")  # no subjectAltName
        with tls_peer(cert, key, mode) as peer:
            app = make_app(MAIL_SERVER="localhost", MAIL_PORT=peer.port, MAIL_USE_TLS=mode == "starttls",
                           MAIL_USE_SSL=mode == "implicit", MAIL_USERNAME="user", MAIL_PASSWORD="password",
                           SYNCSMTP={"ca_file": ca.ca_file})
            with pytest.raises(syncsmtp.CertificateError):
                post(app)
    assert peer.after_tls == []  # no EHLO, no AUTH


def test_password_over_plaintext_is_refused_at_init_app(smtp_server_factory: ServerFactory,
                                                        make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none", users={"user": "password"}, auth_requires_tls=False)
    with pytest.raises(ValueError, match=r"MAIL_USE_TLS.*allow_plaintext_auth"):
        make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="password")
    with pytest.raises(ValueError, match="allow_plaintext_auth"):
        make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="password", TESTING=True)
    app = make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="password",
                   SYNCSMTP={"allow_plaintext_auth": True})
    post(app)
    (received,) = server.wait_for(1)
    assert received.auth_user == "user" and not received.tls


def test_credentials_are_used_only_when_both_are_set(smtp_server_factory: ServerFactory,
                                                     make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    post(make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD=None), "user only")
    post(make_app(server, MAIL_USERNAME=None, MAIL_PASSWORD="password"), "password only")
    assert subjects(server.wait_for(2)) == ["user only", "password only"]
    assert all(message.auth_user is None for message in server.outbox)


def test_mail_server_and_port(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    first, second = smtp_server_factory(tls="none"), smtp_server_factory(tls="none")
    post(make_app(first, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(second.port)), "by port")
    assert subjects(second.wait_for(1)) == ["by port"] and first.outbox == []
    with pytest.raises(ValueError, match="MAIL_PORT"):
        make_app(first, MAIL_PORT="smtp")


def test_mail_default_sender(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    post(make_app(server, MAIL_DEFAULT_SENDER=("Site Team", "team@example.com")), "tuple")
    (received,) = server.wait_for(1)
    assert received.sender == "team@example.com"
    assert received.message["From"] == "Site Team <team@example.com>"

    def explicit(extension: ModuleType) -> list[Any]:
        return [extension.Message("explicit", sender="Ann <ann@example.com>", recipients=["bob@example.com"])]

    post(make_app(server, build=explicit))
    assert server.wait_for(2)[1].sender == "ann@example.com"
    with pytest.raises(syncsmtp.MessageError, match="MAIL_DEFAULT_SENDER"):
        post(make_app(server, MAIL_DEFAULT_SENDER=None))
    assert server.connections == 2


def test_defaults_and_attributes_are_flask_mails(flask_mail: ModuleType) -> None:
    configs: list[dict[str, Any]] = [
        {},
        {"TESTING": True},
        {"DEBUG": True},
        {"MAIL_SERVER": "smtp.example.com", "MAIL_PORT": 587, "MAIL_USE_TLS": True, "MAIL_USERNAME": "u",
         "MAIL_PASSWORD": "p", "MAIL_DEFAULT_SENDER": ("Site", "site@example.com"), "MAIL_MAX_EMAILS": 10,
         "MAIL_SUPPRESS_SEND": False, "MAIL_ASCII_ATTACHMENTS": True, "MAIL_DEBUG": 1, "TESTING": True},
    ]
    names = ("server", "port", "username", "password", "use_tls", "use_ssl", "default_sender", "debug",
             "max_emails", "suppress", "ascii_attachments")
    for config in configs:
        ours, theirs = Flask("ours"), Flask("theirs")
        for app in (ours, theirs):
            app.config.update(config)
        state = Mail(ours).state
        their_state = flask_mail.Mail(theirs).state
        assert {name: getattr(state, name) for name in names} == \
            {name: getattr(their_state, name) for name in names}, config
    defaults = Mail(Flask("defaults")).state
    assert defaults is not None
    assert (defaults.policy.host, defaults.policy.port, defaults.policy.tls) == ("127.0.0.1", 25, "none")
    assert (defaults.connections, defaults.timeout) == (4, syncsmtp.DEFAULT_TIMEOUT)


def test_mail_use_tls_and_ssl_together_is_an_error(make_app: AppFactory) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        make_app(MAIL_USE_TLS=True, MAIL_USE_SSL=True)


# -- 2. MAIL_MAX_EMAILS and connections --------------------------------------------------------------


def test_sends_share_the_apps_connections(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                          flask_mail: ModuleType) -> None:
    """Flask-Mail connects for every mail.send(); the app's Mailer keeps its connection."""
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    for number in range(5):
        post(app, f"m{number}")
    assert subjects(server.wait_for(5)) == [f"m{number}" for number in range(5)]
    assert server.connections == 1
    app.extensions["mail"].close()
    assert server.commands[0][-1].upper() == b"QUIT"
    post(app, "after close")
    assert server.connections == 2
    server.clear()
    their_app = make_app(server, extension=flask_mail)
    for number in range(3):
        post(their_app, f"m{number}")
    assert mails_per_connection(server) == [1, 1, 1]


def test_init_app_again_closes_the_old_connections(smtp_server_factory: ServerFactory,
                                                   make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    post(app, "before")
    old = app.extensions["mail"]
    assert Mail().init_app(app) is app.extensions["mail"] is not old
    assert server.commands[0][-1].upper() == b"QUIT"
    post(app, "after")
    assert subjects(server.wait_for(2)) == ["before", "after"] and server.connections == 2
    assert getattr(Mail(), "server", None) is None, "no app, no app context: no attributes"


def test_max_emails_caps_each_shared_connection(smtp_server_factory: ServerFactory,
                                                make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server, MAIL_MAX_EMAILS=3)
    for number in range(7):
        post(app, f"m{number}")
    assert len(server.wait_for(7)) == 7
    assert mails_per_connection(server) == [3, 3, 1]
    assert all(lines[-1].upper() == b"QUIT" for lines in server.commands[:2])


def test_max_emails_must_be_a_count(make_app: AppFactory) -> None:
    with pytest.raises(ValueError, match="MAIL_MAX_EMAILS"):
        make_app(MAIL_MAX_EMAILS=-1)
    assert make_app(MAIL_MAX_EMAILS="5").extensions["mail"].max_emails == 5


def test_connect_uses_one_connection(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    mail = Mail()
    with app.app_context(), mail.connect() as connection:
        assert server.connections == 1, "connected on entering the block"
        connection.send(Message("one", recipients=["bob@example.com"], body="1\n"))
        connection.send_message("two", recipients=["bob@example.com"], body="2\n")
        Message("three", recipients=["bob@example.com"], body="3\n").send(connection)
        assert connection.num_emails == 3
    assert subjects(server.wait_for(3)) == ["one", "two", "three"]
    assert server.connections == 1 and server.commands[0][-1].upper() == b"QUIT"
    with app.app_context(), pytest.raises(RuntimeError, match="with block"):
        mail.connect().send(Message("outside", recipients=["bob@example.com"]))


def test_connect_with_max_emails_reconnects(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                            flask_mail: ModuleType) -> None:
    server = smtp_server_factory(tls="none")
    for extension in (syncsmtp.flask, flask_mail):
        server.clear()
        app = make_app(server, extension=extension, MAIL_MAX_EMAILS=2)
        with app.app_context(), extension.Mail(app).connect() as connection:
            for number in range(5):
                connection.send(extension.Message(f"m{number}", recipients=["bob@example.com"], body="x\n"))
        assert len(server.wait_for(5)) == 5
        assert mails_per_connection(server) == [2, 2, 1], extension.__name__
    # After the 4th of 4 messages, Flask-Mail connects again at once and quits
    # an unused connection; syncsmtp connects when a message needs it.
    counts = {}
    for extension in (syncsmtp.flask, flask_mail):
        server.clear()
        app = make_app(server, extension=extension, MAIL_MAX_EMAILS=2)
        with app.app_context(), extension.Mail(app).connect() as connection:
            for number in range(4):
                connection.send(extension.Message(f"m{number}", recipients=["bob@example.com"], body="x\n"))
        server.wait_for(4)
        counts[extension.__name__] = mails_per_connection(server)
    assert counts == {"syncsmtp.flask": [2, 2], "flask_mail": [2, 2, 0]}


def test_connect_fails_on_entering(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context(), pytest.raises(syncsmtp.ConnectError):  # noqa: SIM117
        with Mail(app).connect():
            pytest.fail("the block must not run")


def test_threads_share_one_app(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    failures: list[BaseException] = []

    def work(number: int) -> None:
        client = app.test_client()
        try:
            for index in range(10):
                reply = client.post("/send", data={"subject": f"t{number}-m{index}"})
                assert reply.status_code == 200
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads) and failures == []
    received = server.wait_for(80)
    assert sorted(subjects(received)) == sorted(f"t{n}-m{i}" for n in range(8) for i in range(10))
    assert 1 <= server.connections <= 4, "the app's pool: four connections at most"


# -- 3. MAIL_SUPPRESS_SEND, TESTING and record_messages ------------------------------------------------


def test_testing_suppresses_and_records(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server, TESTING=True)
    mail = Mail()
    assert app.extensions["mail"].suppress
    with mail.record_messages() as outbox:
        post(app, "recorded", to=["bob@example.com"])
    assert [(m.subject, m.recipients, m.sender) for m in outbox] == \
        [("recorded", ["bob@example.com"], "site@example.com")]
    assert server.connections == 0
    with pytest.raises(BadHeaderError), syncsmtp.flask.record_messages() as outbox:
        post(app, "bad\nsubject")
    assert outbox == [], "a bad message fails under MAIL_SUPPRESS_SEND as it would when sent"


def test_suppress_send_overrides_testing(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    with syncsmtp.flask.record_messages() as outbox:
        post(make_app(server, TESTING=True, MAIL_SUPPRESS_SEND=False), "sent while testing")
        post(make_app(server, TESTING=False, MAIL_SUPPRESS_SEND=True), "suppressed")
    assert [m.subject for m in outbox] == ["sent while testing", "suppressed"]
    assert subjects(server.wait_for(1)) == ["sent while testing"]
    assert server.connections == 1


def test_email_dispatched_signal(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    seen: list[tuple[Flask, str]] = []

    def receiver(sender: Flask, message: Message) -> None:
        seen.append((sender, message.subject))

    with syncsmtp.flask.email_dispatched.connected_to(receiver):
        post(app, "signalled")
    assert seen == [(app, "signalled")]


def test_record_messages_with_flask_mail(flask_mail: ModuleType, make_app: AppFactory) -> None:
    recorded = {}
    for extension in (syncsmtp.flask, flask_mail):
        app = make_app(extension=extension, TESTING=True)
        with extension.Mail(app).record_messages() as outbox:
            post(app, "testing", to=["bob@example.com"])
        recorded[extension.__name__] = [(m.subject, m.recipients, m.sender, m.body) for m in outbox]
    assert recorded["syncsmtp.flask"] == recorded["flask_mail"] == \
        [("testing", ["bob@example.com"], "site@example.com", "body\n")]


# -- 4. messages: send_message, attachments, html, headers --------------------------------------------


def test_send_message(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    mail = Mail(app)
    result = mail.send_message("shortcut", recipients=["bob@example.com"], body="hi\n")
    assert isinstance(result, syncsmtp.SendResult) and result.accepted == ("bob@example.com",)
    assert subjects(server.wait_for(1)) == ["shortcut"]
    assert mail.server == "127.0.0.1" and mail.port == server.port
    # Outside an app context: Mail(app) knows its app, and fills in MAIL_DEFAULT_SENDER at the send.
    message = Message("no context", recipients=["bob@example.com"])
    assert [message.sender] == [None]
    mail.send(message)
    assert message.sender == "site@example.com" and server.wait_for(2)[1].sender == "site@example.com"


def test_attachments(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")

    def build(extension: ModuleType) -> list[Any]:
        message = extension.Message("files", recipients=["bob@example.com"], body="see attached\n")
        message.attach("data.bin", "application/octet-stream", bytes(range(256)) * 8)
        message.attach("naïve résumé.pdf", data=b"%PDF-1.4 not really")
        message.attach("notes.txt", data="text, ünïcode\n")
        logo = extension.Attachment(None, "image/png", b"\x89PNG...", "inline",
                                    headers={"Content-ID": "<logo>"})
        message.attachments.append(logo)
        return [message]

    post(make_app(server, build=build))
    post(make_app(server, build=build, MAIL_ASCII_ATTACHMENTS=True))
    plain, ascii_only = (received.message for received in server.wait_for(2))
    for parsed, name in ((plain, "naïve résumé.pdf"), (ascii_only, "naive resume.pdf")):
        assert parsed.get_content_type() == "multipart/mixed"
        body, data, pdf, notes, logo = parsed.iter_parts()
        assert body.get_content_type() == "text/plain" and body.get_content() == "see attached\r\n"
        assert data.get_filename() == "data.bin" and data.get_content() == bytes(range(256)) * 8
        assert pdf.get_filename() == name and pdf.get_content_type() == "application/pdf"
        assert notes.get_content_type() == "text/plain" and notes.get_param("charset") == "utf-8"
        assert notes.get_payload(decode=True) == "text, ünïcode\n".encode()
        assert logo["Content-ID"] == "<logo>" and logo.get_content_type() == "image/png"
        assert logo["Content-Disposition"] is None, "no file name, no Content-Disposition (as in Flask-Mail)"
    assert b"filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf" in server.outbox[0].data
    assert b'filename="naive resume.pdf"' in server.outbox[1].data
    with pytest.raises(ValueError, match="data"):
        Message("x").attach("no-data.txt")


def test_body_and_html(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")

    def build(extension: ModuleType) -> list[Any]:
        return [extension.Message("both", recipients=["bob@example.com"], body="plain\n", html="<p>html</p>"),
                extension.Message("html only", recipients=["bob@example.com"], html="<p>html</p>")]

    post(make_app(server, build=build))
    both, html_only = (received.message for received in server.wait_for(2))
    assert [part.get_content_type() for part in both.walk()] == \
        ["multipart/mixed", "multipart/alternative", "text/plain", "text/html"]
    assert both.get_body(("plain",)).get_content() == "plain\r\n"  # type: ignore[union-attr]
    assert both.get_body(("html",)).get_content() == "<p>html</p>"  # type: ignore[union-attr]
    assert [part.get_content() for part in html_only.walk() if not part.is_multipart()] == ["", "<p>html</p>"]


def test_cc_bcc_reply_to_extra_headers_date_charset(smtp_server_factory: ServerFactory,
                                                    make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    date = 1_700_000_000.0

    def build(extension: ModuleType) -> list[Any]:
        return [extension.Message(
            "Grüße", recipients=[("Bob", "bob@example.com")], body="Grüße, Zoë\n", cc=["cc@example.com"],
            bcc=["hidden@example.com"], reply_to=("Replies", "reply@example.com"), date=date,
            charset="iso-8859-1", extra_headers={"X-Campaign": "spring", "List-Id": "<news.example.com>"},
        )]

    post(make_app(server, build=build))
    (received,) = server.wait_for(1)
    assert received.recipients == ("bob@example.com", "cc@example.com", "hidden@example.com")
    assert b"hidden@example.com" not in received.data
    parsed = received.message
    assert parsed["To"] == "Bob <bob@example.com>" and parsed["Cc"] == "cc@example.com"
    assert parsed["Reply-To"] == "Replies <reply@example.com>" and "Bcc" not in parsed
    assert parsed["X-Campaign"] == "spring" and parsed["List-Id"] == "<news.example.com>"
    assert parsed["Date"] == email.utils.formatdate(date, localtime=True)
    assert parsed["Subject"] == "Grüße"
    assert parsed.get_param("charset") == "iso-8859-1"
    assert parsed.get_payload(decode=True) == "Grüße, Zoë\n".encode("iso-8859-1").replace(b"\n", b"\r\n")


def test_extra_headers_replace_and_date_is_set_on_send(make_app: AppFactory) -> None:
    app = make_app(TESTING=True)
    message = Message("x", recipients=["bob@example.com"], extra_headers={"Message-ID": "<mine@example.com>"})
    before = time.time()
    with app.app_context(), syncsmtp.flask.record_messages():
        Mail().send(message)
    assert isinstance(message.date, float) and before <= message.date <= time.time()
    assert message.email_message().get_all("Message-ID") == ["<mine@example.com>"]


# -- 5. bad input raises before anything is sent -------------------------------------------------------


@pytest.mark.parametrize("arguments", [
    {"subject": "Hello\nBcc: victim@example.com"},
    {"subject": "Hello\r\nBcc: victim@example.com"},
    {"recipients": ["bob@example.com\r\nRCPT TO:<victim@example.com>"]},
    {"sender": "ann@example.com\nBcc: victim@example.com"},
    {"reply_to": ("Replies\r\n", "reply@example.com")},
    {"cc": ["cc@example.com\nBcc: victim@example.com"]},
    {"extra_headers": {"X-Note": "a\r\nBcc: victim@example.com"}},
], ids=["subject-lf", "subject-crlf", "recipient", "sender", "reply-to", "cc", "extra-header"])
def test_bad_headers_raise_before_connecting(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                             arguments: dict[str, Any]) -> None:
    server = smtp_server_factory(tls="none")

    def build(extension: ModuleType) -> list[Any]:
        return [extension.Message(**{"subject": "s", "recipients": ["bob@example.com"], **arguments})]

    with pytest.raises(BadHeaderError) as caught:
        post(make_app(server, build=build))
    assert isinstance(caught.value, syncsmtp.MessageError) and isinstance(caught.value, ValueError)
    assert server.connections == 0


def test_a_folded_subject_is_allowed(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    post(make_app(server), "Hello\r\n world")
    assert subjects(server.wait_for(1)) == ["Hello world"]


def test_a_local_part_alone_is_sent_as_smtplib_sends_it(smtp_server_factory: ServerFactory,
                                                        make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server)
    with app.app_context():
        app.extensions["mail"].send(Message("no domain", sender="app", recipients=["root"]))
    received = server.wait_for(1)[0]
    assert received.sender == "app@localhost" and received.recipients == ("root@localhost",)
    assert b"RCPT TO:<root>" in server.commands[0]
    assert received.message["To"] == "root"


def test_messages_that_cannot_be_sent(make_app: AppFactory) -> None:
    app = make_app(TESTING=True)
    mail = Mail(app)
    with app.app_context():
        with pytest.raises(syncsmtp.MessageError, match="no recipients"):
            mail.send(Message("nobody"))
        with pytest.raises(syncsmtp.MessageError, match="ESMTP parameters"):
            mail.send(Message("dsn", recipients=["bob@example.com"], rcpt_options=["NOTIFY=SUCCESS"]))
        with pytest.raises(syncsmtp.MessageError, match="charset"):
            mail.send(Message("charset", recipients=["bob@example.com"], charset="no-such-charset"))
        assert mail.send(Message("utf8", recipients=["bob@example.com"], mail_options=["SMTPUTF8"])) is None
        with pytest.raises(syncsmtp.MessageError, match="not an email address"):
            mail.send(Message("no address", recipients=["Root <>"]))
    with pytest.warns(DeprecationWarning):
        assert Message("a\nb").is_bad_headers()


# -- 6. typed errors, SYNCSMTP, MAIL_DEBUG ---------------------------------------------------------------


def test_wrong_password_is_auth_declined(smtp_server: SMTPTestServer, make_app: AppFactory) -> None:
    app = make_app(smtp_server, MAIL_USE_TLS=True, MAIL_USERNAME="user", MAIL_PASSWORD="wrong",
                   SYNCSMTP={"ca_file": smtp_server.ca_file})
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        post(app)
    assert caught.value.reply is not None and caught.value.reply.code == 535
    assert smtp_server.outbox == []


def test_closed_port_is_connect_error(make_app: AppFactory) -> None:
    with pytest.raises(syncsmtp.ConnectError) as caught:
        post(make_app(MAIL_PORT=closed_port()))
    assert isinstance(caught.value, ConnectionError)


def test_syncsmtp_url_replaces_the_server_keys(smtp_server: SMTPTestServer, make_app: AppFactory) -> None:
    assert smtp_server.ca_file is not None
    url = f"smtp+starttls://user:password@127.0.0.1:{smtp_server.port}?ca_file={quote(smtp_server.ca_file)}"
    app = make_app(None, MAIL_SERVER="127.0.0.1", MAIL_PORT=closed_port(), SYNCSMTP={"url": url})
    post(app)
    (received,) = smtp_server.wait_for(1)
    assert received.tls and received.auth_user == "user"
    state = app.extensions["mail"]
    assert (state.server, state.port, state.username, state.use_tls) == \
        ("127.0.0.1", smtp_server.port, "user", True)
    assert "<redacted>" in repr(state) and repr(state).count("password") == 1, "its name only"


def test_syncsmtp_policy_options(smtp_server: SMTPTestServer, make_app: AppFactory) -> None:
    app = make_app(smtp_server, SYNCSMTP={"tls": "opportunistic", "ca_file": smtp_server.ca_file,
                                          "connections": 2, "timeout": 5})
    post(app)
    assert smtp_server.wait_for(1)[0].tls, "STARTTLS when offered"
    state = app.extensions["mail"]
    assert (state.connections, state.timeout, state.policy.tls) == (2, 5.0, "opportunistic")
    for bad in ({"ca_file_typo": "/x"}, {"connections": 0}, {"timeout": -1}, {"url": "ftp://example.com"},
                {"tls": "sometimes"}, [("verify", False)]):
        with pytest.raises(ValueError, match=r"SYNCSMTP|Policy"):
            make_app(SYNCSMTP=bad)


def test_timeout(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.stall("end-of-data")
    started = time.monotonic()
    with pytest.raises(syncsmtp.SendTimeout) as caught:
        post(make_app(server, SYNCSMTP={"timeout": 1}))
    assert time.monotonic() - started < 5 and caught.value.maybe_delivered


def test_mail_debug_logs_the_transcript(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                        caplog: pytest.LogCaptureFixture) -> None:
    server = smtp_server_factory(tls="none")
    app = make_app(server, MAIL_DEBUG=True)
    with caplog.at_level(logging.DEBUG, logger=app.logger.name):
        post(app)
    assert any("MAIL FROM:<site@example.com>" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=app.logger.name):
        post(make_app(server, MAIL_DEBUG=False))
    assert not caplog.records


def test_mail_without_init_app() -> None:
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        Mail().send(Message("x", recipients=["bob@example.com"], sender="ann@example.com"))


# -- 6b. the password in debuggers: no repr in syncsmtp's frames shows it ----------------------------

# No source line holds the password (debuggers quote them); every form of it holds TOKEN.
TOKEN = secrets.token_hex(8)
SECRET = f"pw:{TOKEN}@/"


def credential_config(source: str, port: int, *, ca_file: str | None = None) -> dict[str, Any]:
    """Config that gives the user ``user`` and SECRET through ``source``: over STARTTLS trusting
    ``ca_file`` when it is given, else over plaintext (a ValueError at init_app)."""
    trust = {"ca_file": ca_file} if ca_file else {}
    url = f"{'smtp' if ca_file else 'smtp+plain'}://user:{quote(SECRET, safe='')}@127.0.0.1:{port}"
    if source == "MAIL_PASSWORD":
        return {"MAIL_PORT": port, "MAIL_USE_TLS": bool(ca_file), "MAIL_USERNAME": "user",
                "MAIL_PASSWORD": SECRET, "SYNCSMTP": trust}
    if source == "SYNCSMTP-password":
        return {"MAIL_PORT": port, "MAIL_USE_TLS": bool(ca_file),
                "SYNCSMTP": {**trust, "username": "user", "password": SECRET}}
    return {"SYNCSMTP": {**trust, "url": url}}


def assert_no_password_in_frames(error: BaseException) -> None:
    """What a debugger shows of each frame (the repr of its locals) and the message hide the
    password; but for ``config``: the app's own config object lists every key, MAIL_PASSWORD too."""
    assert TOKEN not in str(error)
    for frame, _ in traceback.walk_tb(error.__traceback__):
        for name, value in frame.f_locals.items():
            shown = shown_repr(value)
            assert name == "config" or TOKEN not in shown, f"{frame.f_code.co_name}() shows {name} = {shown}"


def shown_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as error:  # an object half made when the error was raised: debuggers say so
        return f"<repr failed: {error!r}>"


@pytest.mark.parametrize("source", ["MAIL_PASSWORD", "SYNCSMTP-password", "SYNCSMTP-url"])
def test_credentials_over_plaintext_error_hides_the_password(make_app: AppFactory, source: str) -> None:
    with pytest.raises(ValueError, match="allow_plaintext_auth") as caught:
        make_app(**credential_config(source, closed_port()))
    assert_no_password_in_frames(caught.value)


@pytest.mark.parametrize("source", ["MAIL_PASSWORD", "SYNCSMTP-password", "SYNCSMTP-url"])
def test_auth_declined_in_a_view_hides_the_password(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                                    source: str) -> None:
    server = smtp_server_factory(tls="starttls", users={"user": "other"})
    assert server.ca_file is not None
    app = make_app(**credential_config(source, server.port, ca_file=server.ca_file))
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        post(app)
    assert_no_password_in_frames(caught.value)
    state = app.extensions["mail"]
    assert state.policy.password == SECRET
    for shown in (repr(state), repr(state.policy), repr(vars(state))):
        assert TOKEN not in shown


# -- 7. side by side with Flask-Mail 0.10 (plaintext, no AUTH) -------------------------------------------

_VOLATILE = {"date", "message-id"}
_ADDRESS_HEADERS = {"to", "cc", "from", "reply-to"}
_PART_FIELDS = {"content-type", "content-transfer-encoding", "content-disposition"}


def header_value(name: str, value: Any) -> Any:
    """A header's decoded value: addresses as a sorted list (Flask-Mail orders To
    and Cc by set iteration), Date and Message-ID as present, content headers
    without the random boundary."""
    key = name.lower()
    if key in _VOLATILE:
        return "present"
    if key in _ADDRESS_HEADERS:
        return sorted(str(address) for address in value.addresses)
    if key in ("content-type", "content-disposition"):
        return (value.content_type if key == "content-type" else value.content_disposition,
                sorted((k, v) for k, v in value.params.items() if k != "boundary"))
    return str(value)


def describe(received: ReceivedMessage) -> dict[str, Any]:
    """What is compared: the envelope, the top-level headers in order, and per
    MIME part its content headers, other headers, and decoded content."""
    parsed = received.message
    parts = []
    for part in parsed.walk():
        parts.append({
            "content": {name.lower(): header_value(name, value) for name, value in part.items()
                        if name.lower() in _PART_FIELDS},
            "other headers": [] if part is parsed else sorted(
                name for name in part if name.lower() not in _PART_FIELDS | {"mime-version"}),
            "mime-version": part["MIME-Version"],
            "payload": None if part.is_multipart() else part.get_payload(decode=True),
        })
    return {
        "sender": received.sender,
        "recipients": sorted(received.recipients),
        "headers": [(name, "(in parts)" if name.lower() in _PART_FIELDS else header_value(name, value))
                    for name, value in parsed.items()],
        "parts": parts,
    }


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Where the two descriptions differ, as "where: ours != theirs" lines."""
    found = [f"{key}: {ours[key]!r} != {theirs[key]!r}"
             for key in ("sender", "recipients", "headers") if ours[key] != theirs[key]]
    if len(ours["parts"]) != len(theirs["parts"]):
        return [*found, f"parts: {len(ours['parts'])} != {len(theirs['parts'])}"]
    for index, (mine, other) in enumerate(zip(ours["parts"], theirs["parts"], strict=True)):
        for field in ("content", "other headers", "payload"):
            if mine[field] != other[field]:
                found.append(f"part {index} {field}: {mine[field]!r} != {other[field]!r}")
        if index and (mine["mime-version"], other["mime-version"]) != (None, "1.0"):
            found.append(f"part {index} MIME-Version: {mine['mime-version']!r} != {other['mime-version']!r}")
    return found


def case_plain(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello", recipients=["bob@example.com"], body="The body.\n.a dot line\n")]


def case_no_final_newline(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello", recipients=["bob@example.com"], body="no newline at the end")]


def case_html(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello", recipients=["bob@example.com"], body="text\n", html="<p>html</p>")]


def case_html_only(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello", recipients=["bob@example.com"], html="<p>html</p>")]


def case_alts(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello", recipients=["bob@example.com"], body="text\n",
                              alts={"html": "<p>html</p>", "enriched": "<bold>rich</bold>"})]


def case_non_ascii(extension: ModuleType) -> list[Any]:
    return [extension.Message("Grüße — ünïcödé ✓ 日本語", recipients=["bob@example.com"],
                              body="Body: ü, ß, 日本語 and € signs.\n", html="<p>€</p>")]


def case_addresses(extension: ModuleType) -> list[Any]:
    return [extension.Message(
        "Addresses", sender=("Jürgen Müller", "jurgen@example.com"),
        recipients=["Bob Example <bob@example.com>", ("Zoë Ångström", "zoe@exämple.com"),
                    "plain@example.com"],
        cc=["cc@example.com", ("Ça Va", "ca@例え.jp")], bcc=["hidden@example.com"],
        reply_to=("Replies", "reply@example.com"), body="x\n", date=1_700_000_000.0,
        extra_headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsub@example.com>"},
    )]


def case_attachments(extension: ModuleType) -> list[Any]:
    message = extension.Message("Files", recipients=["bob@example.com"], body="see attached\n",
                                html="<p>see attached</p>")
    message.attach("data.bin", "application/octet-stream", bytes(range(256)) * 8)
    message.attach("report.pdf", data=b"%PDF-1.4 not really")
    message.attach("naïve résumé.txt", data=b"plain text\n")
    message.attach("notes.txt", data="ascii text\n")
    message.attach(None, "image/png", b"\x89PNG...", "inline", headers={"Content-ID": "<logo>"})
    return [message]


def case_attachment_without_html(extension: ModuleType) -> list[Any]:
    message = extension.Message("File", recipients=["bob@example.com"], body="one file\n")
    message.attach("table.csv", data=b"a,b\n1,2\n")
    return [message]


def case_folded_subject(extension: ModuleType) -> list[Any]:
    return [extension.Message("Hello\r\n world", recipients=["bob@example.com"], body="x\n")]


def case_latin1(extension: ModuleType) -> list[Any]:
    return [extension.Message("Grüße", recipients=["bob@example.com"], body="Grüße, Zoë\n",
                              charset="iso-8859-1")]


def case_long_line(extension: ModuleType) -> list[Any]:
    return [extension.Message("Long", recipients=["bob@example.com"], body="x" * 1200 + "\n")]


CASES: dict[str, tuple[Build, dict[str, Any], list[str]]] = {
    "plain": (case_plain, {}, []),
    "no final newline": (case_no_final_newline, {}, []),
    "html": (case_html, {}, []),
    "html only": (case_html_only, {}, []),
    "alts": (case_alts, {}, []),
    "non-ascii": (case_non_ascii, {}, []),
    "addresses": (case_addresses, {}, []),
    "attachments": (case_attachments, {}, []),
    "ascii attachments": (case_attachments, {"MAIL_ASCII_ATTACHMENTS": True}, []),
    "attachment without html": (case_attachment_without_html, {}, []),
    "default sender tuple": (case_plain, {"MAIL_DEFAULT_SENDER": ("Site Ünï", "site@example.com")}, []),
    "folded subject": (case_folded_subject, {}, []),
    "latin-1": (case_latin1, {}, []),
    # A line longer than SMTP's 998 octets: Flask-Mail sends it as it is, syncsmtp quoted-printable.
    "long line": (case_long_line, {}, [
        "part 0 content: {'content-type': ('text/plain', [('charset', 'utf-8')]), "
        "'content-transfer-encoding': 'quoted-printable'} != {'content-type': ('text/plain', "
        "[('charset', 'utf-8')]), 'content-transfer-encoding': '7bit'}",
    ]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_flask_mail(case: str, smtp_server_factory: ServerFactory, make_app: AppFactory,
                            flask_mail: ModuleType) -> None:
    build, config, expected = CASES[case]
    server = smtp_server_factory(tls="none")
    post(make_app(server, build=build, **config))
    post(make_app(server, extension=flask_mail, build=build, **config))
    ours, theirs = server.wait_for(2)
    assert differences(describe(ours), describe(theirs)) == expected


def test_envelope_from_same_as_flask_mail(smtp_server_factory: ServerFactory, make_app: AppFactory,
                                          flask_mail: ModuleType) -> None:
    server = smtp_server_factory(tls="none")
    for extension in (syncsmtp.flask, flask_mail):
        app = make_app(server, extension=extension)
        with app.app_context(), extension.Mail(app).connect() as connection:
            connection.send(extension.Message("bounce", recipients=["bob@example.com"], body="x\n"),
                            envelope_from=("Bounces", "bounce@example.com"))
    ours, theirs = server.wait_for(2)
    assert ours.sender == theirs.sender == "bounce@example.com"
    assert differences(describe(ours), describe(theirs)) == []


def test_flask_mail_repeats_mime_version_in_every_part(smtp_server_factory: ServerFactory,
                                                       make_app: AppFactory, flask_mail: ModuleType) -> None:
    """The one header difference the comparison leaves out: Flask-Mail's MIMEText and
    MIMEBase parts each carry MIME-Version, which RFC 2045 asks for at the top only."""
    server = smtp_server_factory(tls="none")
    post(make_app(server, build=case_attachments))
    post(make_app(server, extension=flask_mail, build=case_attachments))
    ours, theirs = server.wait_for(2)
    assert [part["MIME-Version"] for part in ours.message.walk()] == ["1.0"] + [None] * 8
    assert [part["MIME-Version"] for part in theirs.message.walk()] == ["1.0"] * 9


def test_header_encoding_differs_but_decodes_the_same(flask_mail: ModuleType) -> None:
    """Flask-Mail writes every display name as an encoded word, in the message's
    charset; syncsmtp (the email package's modern policy) only the words that need
    it, always in UTF-8. The decoded headers are the same."""
    ours_app, their_app = Flask("ours"), Flask("theirs")
    Mail(ours_app)
    flask_mail.Mail(their_app)
    arguments: dict[str, Any] = {"subject": "Grüße", "sender": ("Ann", "ann@example.com"),
                                 "recipients": ["bob@example.com"], "body": "x\n", "charset": "iso-8859-1"}
    with ours_app.app_context():
        ours = Message(**arguments).as_bytes()
    with their_app.app_context():
        theirs = flask_mail.Message(**arguments).as_bytes()
    assert b"From: Ann <ann@example.com>" in ours
    assert b"From: =?iso-8859-1?q?Ann?= <ann@example.com>" in theirs
    assert b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=" in ours
    assert b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=" in theirs
    parsed = [email.message_from_bytes(data, policy=email.policy.default) for data in (ours, theirs)]
    assert [str(p["From"]) for p in parsed] == ["Ann <ann@example.com>"] * 2
    assert [str(p["Subject"]) for p in parsed] == ["Grüße"] * 2


def test_recipient_order_and_duplicates(smtp_server_factory: ServerFactory, make_app: AppFactory) -> None:
    """Flask-Mail takes the envelope and To from sets (their order changes from run to
    run); syncsmtp keeps the order given, To then Cc then Bcc, each address once."""
    server = smtp_server_factory(tls="none")

    def build(extension: ModuleType) -> list[Any]:
        return [extension.Message(
            "order", recipients=["c@example.com", "a@example.com", ("A", "a@example.com")],
            cc=["b@example.com", "a@example.com"], bcc=["a@example.com", "d@example.com"],
        )]

    post(make_app(server, build=build))
    (received,) = server.wait_for(1)
    assert received.recipients == ("c@example.com", "a@example.com", "b@example.com", "d@example.com")
    assert received.message["To"] == "c@example.com, a@example.com, A <a@example.com>"



def test_no_empty_to_header(smtp_server_factory: ServerFactory, make_app: AppFactory,
                            flask_mail: ModuleType) -> None:
    """With only Cc or Bcc recipients Flask-Mail writes an empty "To:" header (not valid
    RFC 5322 syntax); syncsmtp leaves To out. Everything else is the same."""
    server = smtp_server_factory(tls="none")

    def build(extension: ModuleType) -> list[Any]:
        return [extension.Message("no to", cc=["cc@example.com"], bcc=["hidden@example.com"], body="x\n")]

    post(make_app(server, build=build))
    post(make_app(server, extension=flask_mail, build=build))
    ours, theirs = server.wait_for(2)
    assert "To" not in ours.message and b"\r\nTo: \r\n" in theirs.data
    described = describe(theirs)
    described["headers"].remove(("To", []))
    assert differences(describe(ours), described) == []
    assert sorted(ours.recipients) == sorted(theirs.recipients) == ["cc@example.com", "hidden@example.com"]
