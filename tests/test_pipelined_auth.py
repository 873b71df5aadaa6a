"""AUTH PLAIN pipelined with the first message's envelope (RFC 4954 section 4),
against the project's test server over STARTTLS: one round trip fewer, and no
byte of the message before AUTH has succeeded."""

from __future__ import annotations

import email.message
from collections.abc import Callable
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
PASSWORD = "pipelined-Secret-31"


def make_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = "pipelined"
    message.set_content("hello\n")
    return message


def server(factory: ServerFactory, **options: Any) -> SMTPTestServer:
    return factory(tls="starttls", users={"user": PASSWORD}, auth_mechanisms=("PLAIN", "LOGIN"),
                   extensions=("PIPELINING", "8BITMIME", "SIZE 1000000"), **options)


def client_lines_before(transcript: tuple[str, ...], server_reply: str) -> list[str]:
    """The client's lines from the AUTH command up to the first server line starting with ``server_reply``."""
    start = next(i for i, line in enumerate(transcript) if line.startswith("C: AUTH"))
    lines = []
    for line in transcript[start:]:
        if line.startswith("S: " + server_reply):
            break
        lines.append(line)
    return lines


def test_auth_plain_goes_with_mail_rcpt_and_data(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(auth_mechanisms=("PLAIN",)), timeout=10)
    assert result.auth_mechanism == "PLAIN" and result.accepted == ("bob@example.com",)
    before_235 = client_lines_before(result.transcript, "235")
    assert before_235[0] == "C: AUTH PLAIN <redacted>"
    assert before_235[1].startswith("C: MAIL FROM:<ann@example.com> SIZE=")
    assert before_235[2:] == ["C: RCPT TO:<bob@example.com>", "C: DATA"]
    assert PASSWORD not in "\n".join(result.transcript)
    assert smtp.outbox[0].auth_user == "user"


def test_a_server_that_declines_auth_but_takes_mail_gets_no_message(
    smtp_server_factory: ServerFactory,
) -> None:
    # The server answers 535 and then would accept MAIL, RCPT and DATA without
    # authentication (it does not require it): the client sends no data.
    smtp = server(smtp_server_factory)
    smtp.fail("auth", 535, "5.7.8 Authentication credentials invalid")
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), smtp.policy(auth_mechanisms=("PLAIN",)), timeout=10)
    assert not caught.value.maybe_delivered
    assert caught.value.reply is not None and caught.value.reply.code == 535
    assert smtp.outbox == []
    assert PASSWORD not in str(caught.value) + "\n".join(caught.value.transcript)


def test_a_mechanism_without_an_initial_response_is_not_pipelined(
    smtp_server_factory: ServerFactory,
) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(auth_mechanisms=("LOGIN",)), timeout=10)
    assert client_lines_before(result.transcript, "334")[0] == "C: AUTH LOGIN"
    assert result.auth_mechanism == "LOGIN"


def test_a_mailer_authenticates_before_its_first_message(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    with syncsmtp.Mailer(smtp.policy(auth_mechanisms=("PLAIN",))) as mailer:
        result = mailer.send(make_message(), timeout=10)
    assert client_lines_before(result.transcript, "235") == ["C: AUTH PLAIN <redacted>"]
