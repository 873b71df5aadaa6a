"""OAuth2 against a real Postfix: Dovecot's oauth2 passdb checks each token
with the token-introspection endpoint the harness runs on 127.0.0.1
(tests/postfix.py), and sends the RFC 7628 failure challenge for a token
that is not active."""

from __future__ import annotations

import base64
import email.message
import logging
import secrets

import pytest
from postfix import PostfixInstance

import syncsmtp

MECHANISMS = ["XOAUTH2", "OAUTHBEARER"]


def make_message(subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "user1@example.com"
    message["Subject"] = subject
    message.set_content("sent with an OAuth2 token\n")
    return message


def new_token(postfix: PostfixInstance, active: bool = True) -> str:
    token = "ya29." + secrets.token_urlsafe(24)
    if active:
        postfix.introspection.tokens[token] = postfix.username
    return token


def policy(postfix: PostfixInstance, token: object, mechanism: str) -> syncsmtp.Policy:
    return syncsmtp.Policy(host=postfix.host, port=postfix.port, tls="starttls", ca_file=postfix.ca_file,
                           username=postfix.username, oauth2_token=token,  # type: ignore[arg-type]
                           auth_mechanisms=(mechanism,))


def assert_hidden(token: str, *texts: object) -> None:
    shown = "\n".join(str(text) for text in texts)
    assert token not in shown
    assert base64.b64encode(token.encode()).decode()[:16] not in shown


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_token_authenticates_and_delivers(fresh_postfix: PostfixInstance, mechanism: str) -> None:
    token = new_token(fresh_postfix)
    result = syncsmtp.send(make_message(mechanism), policy(fresh_postfix, token, mechanism), timeout=30)
    assert result.auth_mechanism == mechanism and result.accepted == ("user1@example.com",)
    assert b"Subject: " + mechanism.encode() in fresh_postfix.wait_for(1)[0]
    assert_hidden(token, result.transcript, repr(result))


class Tokens:
    """An application's token cache holding an expired token until asked to refresh."""

    def __init__(self, cached: str, fresh: str) -> None:
        self.cached, self.fresh = cached, fresh
        self.calls: list[bool] = []

    def __call__(self, refresh: bool) -> str:
        self.calls.append(refresh)
        if refresh:
            self.cached = self.fresh
        return self.cached


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("how", ["send", "mailer"])
def test_an_expired_token_is_refreshed_once_then_accepted(fresh_postfix: PostfixInstance, mechanism: str,
                                                         how: str) -> None:
    expired, fresh = new_token(fresh_postfix, active=False), new_token(fresh_postfix)
    tokens = Tokens(expired, fresh)
    if how == "send":  # AUTH pipelined with the envelope
        result = syncsmtp.send(make_message(how), policy(fresh_postfix, tokens, mechanism), timeout=30)
    else:  # AUTH on its own
        with syncsmtp.Mailer(policy(fresh_postfix, tokens, mechanism)) as mailer:
            result = mailer.send(make_message(how), timeout=30)
    assert tokens.calls == [False, True]
    assert result.auth_mechanism == mechanism
    assert len(fresh_postfix.wait_for(1)) == 1
    assert sum(line.startswith("C: AUTH ") for line in result.transcript) >= 1
    assert_hidden(expired, result.transcript)
    assert_hidden(fresh, result.transcript)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("how", ["send", "mailer"])
def test_a_token_refused_twice_raises_with_the_json_status(
    fresh_postfix: PostfixInstance, mechanism: str, how: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first, second = new_token(fresh_postfix, active=False), new_token(fresh_postfix, active=False)
    tokens = Tokens(first, second)
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        if how == "send":
            syncsmtp.send(make_message(how), policy(fresh_postfix, tokens, mechanism), timeout=30)
        else:
            with syncsmtp.Mailer(policy(fresh_postfix, tokens, mechanism)) as mailer:
                mailer.send(make_message(how), timeout=30)
    error = caught.value
    assert tokens.calls == [False, True]
    assert error.server_error is not None and error.server_error.get("status")
    assert str(error.server_error["status"]) in str(error)
    assert error.reply is not None and error.reply.code == 535
    assert not error.maybe_delivered and fresh_postfix.delivered() == []
    for token in (first, second):
        assert_hidden(token, error, repr(error), error.transcript, caplog.text)
