"""Which password mechanism a policy picks by default when the server offers
several: PLAIN first under TLS with a verified certificate (one round trip,
pipelined with the first message's envelope), CRAM-MD5 first where the server
is not authenticated (plaintext allowed, or ``verify=False``), and an explicit
``auth_mechanisms`` always as given. Against the project's test server."""

from __future__ import annotations

import email.message
from collections.abc import Callable
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
PASSWORD = "order-Secret-47"
ALL_THREE = ("PLAIN", "LOGIN", "CRAM-MD5")


def make_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = "order"
    message.set_content("hello\n")
    return message


def server(factory: ServerFactory, tls: str = "starttls", **options: Any) -> SMTPTestServer:
    return factory(tls=tls, users={"user": PASSWORD}, auth_mechanisms=ALL_THREE,
                   extensions=("PIPELINING", "8BITMIME"), **options)


def auth_line(result: syncsmtp.SendResult) -> str:
    return next(line for line in result.transcript if line.startswith("C: AUTH"))


def test_verified_starttls_prefers_plain_and_pipelines_it(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(), timeout=10)
    assert result.auth_mechanism == "PLAIN"
    # AUTH, MAIL, RCPT and DATA were written before the 235 came.
    start = result.transcript.index("C: AUTH PLAIN <redacted>")
    assert result.transcript[start + 1].startswith("C: MAIL FROM:<ann@example.com>")
    assert result.transcript[start + 2:start + 5] == ("C: RCPT TO:<bob@example.com>", "C: DATA",
                                                      "S: 235 Authentication successful.")
    assert smtp.outbox[0].auth_user == "user"


def test_verified_implicit_tls_prefers_plain(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory, tls="implicit")
    result = syncsmtp.send(make_message(), smtp.policy(tls="implicit"), timeout=10)
    assert result.auth_mechanism == "PLAIN" and auth_line(result) == "C: AUTH PLAIN <redacted>"


def test_unverified_tls_keeps_cram_md5_first(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    with pytest.warns(UserWarning, match="verify=False"):
        policy = smtp.policy(ca_file=None, verify=False)
    result = syncsmtp.send(make_message(), policy, timeout=10)
    assert result.auth_mechanism == "CRAM-MD5" and auth_line(result) == "C: AUTH CRAM-MD5"
    assert "C: <redacted>" in result.transcript, "the answer to the challenge"
    assert smtp.outbox[0].auth_user == "user"


def test_plaintext_auth_keeps_cram_md5_first(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory, tls="none", auth_requires_tls=False)
    policy = smtp.policy(username="user", password=PASSWORD, allow_plaintext_auth=True)
    result = syncsmtp.send(make_message(), policy, timeout=10)
    assert result.auth_mechanism == "CRAM-MD5" and auth_line(result) == "C: AUTH CRAM-MD5"


@pytest.mark.parametrize("order", [("CRAM-MD5", "PLAIN"), ("LOGIN",)])
def test_an_explicit_order_is_followed_under_verified_tls(smtp_server_factory: ServerFactory,
                                                         order: tuple[str, ...]) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(auth_mechanisms=order), timeout=10)
    assert result.auth_mechanism == order[0]


def test_the_order_as_the_policy_reports_it() -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", username="user", password=PASSWORD)
    assert policy.mechanisms == ("CRAM-MD5", "PLAIN", "LOGIN")
    names = [item.mechanism for item in policy.sasl_authenticators(verified_tls=True)]
    assert names == ["PLAIN", "CRAM-MD5", "LOGIN"]
    # OAuth2 mechanisms stay ahead of the password ones.
    with_token = syncsmtp.Policy(host="127.0.0.1", username="user", password=PASSWORD, oauth2_token="tok")
    names = [item.mechanism for item in with_token.sasl_authenticators(verified_tls=True)]
    assert names == ["OAUTHBEARER", "XOAUTH2", "PLAIN", "CRAM-MD5", "LOGIN"]


def test_an_application_authenticator_stays_first_under_verified_tls() -> None:
    own = syncsmtp.CramMD5(PASSWORD)
    policy = syncsmtp.Policy(host="127.0.0.1", username="user", password=PASSWORD, authenticators=[own])
    first = policy.sasl_authenticators(verified_tls=True)[0]
    assert first is own
