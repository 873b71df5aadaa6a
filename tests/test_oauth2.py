"""OAuth2 (XOAUTH2 and OAUTHBEARER) against the project's test server: the
initial response (pipelined with the first envelope when the server allows),
the RFC failure challenge answered, one refresh of the token on the same
connection, the token never shown, and a Mailer that survives expiry."""

from __future__ import annotations

import base64
import email.message
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
USER = "me@example.com"
GOOD = "good-token-Zq81xP"
STALE = "stale-token-Wm27aK"
PIPELINING = ("PIPELINING", "8BITMIME", "SIZE 1000000")
LOCK_STEP = ("8BITMIME", "SIZE 1000000")


def make_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = "oauth2"
    message.set_content("hello\n")
    return message


class Tokens:
    """An application's token cache: ``stale`` until asked to refresh."""

    def __init__(self, cached: str = STALE, fresh: str = GOOD) -> None:
        self.cached, self.fresh = cached, fresh
        self.calls: list[bool] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, refresh: bool) -> str:
        self.calls.append(refresh)
        self.threads.append(threading.current_thread())
        if refresh:
            self.cached = self.fresh
        return self.cached


def server(factory: ServerFactory, extensions: tuple[str, ...] = PIPELINING,
           **options: Any) -> SMTPTestServer:
    return factory(tls="starttls", oauth2_tokens={USER: GOOD}, extensions=extensions, **options)


def assert_hidden(token: str, *texts: object) -> None:
    shown = "\n".join(str(text) for text in texts)
    assert token not in shown
    assert base64.b64encode(token.encode()).decode()[:12] not in shown


def auth_lines(transcript: tuple[str, ...]) -> list[str]:
    """The transcript from the first AUTH command to the first 235."""
    start = next(i for i, line in enumerate(transcript) if line.startswith("C: AUTH"))
    end = next(i for i, line in enumerate(transcript) if line.startswith("S: 235"))
    return list(transcript[start:end + 1])


@pytest.mark.parametrize("extensions", [PIPELINING, LOCK_STEP], ids=["pipelined", "lock-step"])
@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_a_valid_token_authenticates(smtp_server_factory: ServerFactory, mechanism: str,
                                     extensions: tuple[str, ...]) -> None:
    smtp = server(smtp_server_factory, extensions)
    policy = smtp.policy(oauth2_token=GOOD, auth_mechanisms=(mechanism,))
    result = syncsmtp.send(make_message(), policy, timeout=10)
    assert result.auth_mechanism == mechanism and result.accepted == ("bob@example.com",)
    assert smtp.outbox[0].auth_user == USER
    lines = auth_lines(result.transcript)
    assert lines[0] == f"C: AUTH {mechanism} <redacted>"
    if extensions is PIPELINING:  # the envelope went with AUTH; the content after the 235
        assert lines[1].startswith("C: MAIL FROM:<ann@example.com>")
        assert not any("message data" in line for line in lines)
    else:
        assert lines[1] == "S: 235 Authentication successful."
    assert_hidden(GOOD, result.transcript, policy, repr(result))
    command = next(line for line in smtp.commands[0] if line.startswith(b"AUTH "))
    sasl_base64 = command.split()[2].decode()  # what went on the wire
    assert len(sasl_base64) > 40 and sasl_base64 not in "\n".join(result.transcript)


def test_oauthbearer_is_preferred_and_carries_host_and_port(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(), timeout=10)
    assert result.auth_mechanism == "OAUTHBEARER"
    command = next(line for line in smtp.commands[0] if line.startswith(b"AUTH "))
    initial = base64.b64decode(command.split()[2])
    assert initial == (f"n,a={USER},\x01host=127.0.0.1\x01port={smtp.port}\x01"
                       f"auth=Bearer {GOOD}\x01\x01").encode()


def test_xoauth2_when_the_server_offers_only_it(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory, auth_mechanisms=("XOAUTH2",))
    result = syncsmtp.send(make_message(), smtp.policy(), timeout=10)
    assert result.auth_mechanism == "XOAUTH2"
    command = next(line for line in smtp.commands[0] if line.startswith(b"AUTH "))
    assert base64.b64decode(command.split()[2]) == f"user={USER}\x01auth=Bearer {GOOD}\x01\x01".encode()


@pytest.mark.parametrize("extensions", [PIPELINING, LOCK_STEP], ids=["pipelined", "lock-step"])
@pytest.mark.parametrize(("mechanism", "answer"), [("OAUTHBEARER", b"AQ=="), ("XOAUTH2", b"")])
def test_an_expired_token_is_refreshed_once_on_the_same_connection(
    smtp_server_factory: ServerFactory, mechanism: str, answer: bytes, extensions: tuple[str, ...],
) -> None:
    smtp = server(smtp_server_factory, extensions)
    tokens = Tokens()
    result = syncsmtp.send(make_message(), smtp.policy(oauth2_token=tokens, auth_mechanisms=(mechanism,)),
                           timeout=10)
    assert tokens.calls == [False, True]
    assert result.auth_mechanism == mechanism and smtp.connections == 1
    assert len(smtp.outbox) == 1 and smtp.outbox[0].auth_user == USER
    commands = smtp.commands[0]
    auths = [i for i, line in enumerate(commands) if line.startswith(b"AUTH ")]
    assert len(auths) == 2
    if extensions is LOCK_STEP:
        # The RFC's answer to the failure challenge: ^A (OAUTHBEARER) or an empty line (XOAUTH2).
        assert commands[auths[0] + 1] == answer
    # Neither the token callable nor the reactor thread: a worker thread.
    assert all(thread is not threading.current_thread() for thread in tokens.threads)
    assert_hidden(STALE, result.transcript)
    assert_hidden(GOOD, result.transcript)


@pytest.mark.parametrize("extensions", [PIPELINING, LOCK_STEP], ids=["pipelined", "lock-step"])
@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_a_token_refused_twice_is_auth_declined_with_the_servers_status(
    smtp_server_factory: ServerFactory, mechanism: str, extensions: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp = server(smtp_server_factory, extensions)
    tokens = Tokens(cached=STALE, fresh="still-bad-token-Hh55")
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), smtp.policy(oauth2_token=tokens, auth_mechanisms=(mechanism,)),
                      timeout=10)
    error = caught.value
    assert tokens.calls == [False, True]
    assert error.server_error is not None
    expected = "invalid_token" if mechanism == "OAUTHBEARER" else "401"
    assert error.server_error["status"] == expected
    assert expected in str(error) and "OAuth2" in str(error)
    assert error.reply is not None and error.reply.code in (535, 501)
    assert not error.maybe_delivered and smtp.outbox == []
    for token in (STALE, "still-bad-token-Hh55"):
        assert_hidden(token, error, error.transcript, repr(error), caplog.text)
    copy = pickle.loads(pickle.dumps(error))  # as a worker process hands it back
    assert copy.server_error == error.server_error and str(copy) == str(error)


def test_a_fixed_token_is_not_retried(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory, LOCK_STEP)
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), smtp.policy(oauth2_token=STALE), timeout=10)
    assert caught.value.server_error == {"status": "invalid_token", "scope": "smtp",
                                         "openid-configuration":
                                         "https://localhost/.well-known/openid-configuration"}
    assert sum(line.startswith(b"AUTH ") for line in smtp.commands[0]) == 1
    assert_hidden(STALE, caught.value, caught.value.transcript)


def test_a_token_callable_that_raises_is_an_auth_error(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)

    def get_token(refresh: bool) -> str:
        raise RuntimeError("the identity provider is down")

    with pytest.raises(syncsmtp.AuthError, match="identity provider is down") as caught:
        syncsmtp.send(make_message(), smtp.policy(oauth2_token=get_token), timeout=10)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert smtp.outbox == []


def test_a_token_callable_returning_a_bad_token_is_an_auth_error(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    with pytest.raises(syncsmtp.AuthError, match="control characters") as caught:
        syncsmtp.send(make_message(), smtp.policy(oauth2_token=lambda refresh: "tok\r\nRSET"), timeout=10)
    assert "RSET" not in str(caught.value)
    assert not any(b"RSET" in line for line in smtp.commands[0])


def test_no_token_over_plaintext(smtp_server_factory: ServerFactory) -> None:
    smtp = smtp_server_factory(tls="none", oauth2_tokens={USER: GOOD}, auth_requires_tls=False)
    tokens = Tokens()
    policy = syncsmtp.Policy(host="127.0.0.1", port=smtp.port, tls="opportunistic", username=USER,
                             oauth2_token=tokens)
    with pytest.raises(syncsmtp.TLSRequiredError):
        syncsmtp.send(make_message(), policy, timeout=10)
    assert tokens.calls == [] and not any(line.startswith(b"AUTH") for line in smtp.commands[0])
    with pytest.raises(ValueError, match="allow_plaintext_auth"):
        syncsmtp.Policy(host="127.0.0.1", tls="none", username=USER, oauth2_token=GOOD)
    allowed = policy.with_options(tls="none", allow_plaintext_auth=True, oauth2_token=GOOD)
    assert syncsmtp.send(make_message(), allowed, timeout=10).auth_mechanism == "OAUTHBEARER"


def test_a_mailer_gets_a_token_per_connection_and_survives_expiry(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    tokens = Tokens(cached=GOOD, fresh="next-token-Pp09")
    with syncsmtp.Mailer(smtp.policy(oauth2_token=tokens)) as mailer:
        mailer.send(make_message(), timeout=10)
        mailer.send(make_message(), timeout=10)
        assert tokens.calls == [False]  # one connection, one token
        # The token expires, and the server closes the connection: the next
        # connection's cached token is refused, refreshed once, then taken.
        smtp.oauth2_tokens[USER] = "next-token-Pp09"
        smtp.drop("mail", times=1)
        mailer.send(make_message(), timeout=10)
    assert tokens.calls == [False, False, True]
    assert smtp.connections == 2 and len(smtp.outbox) == 3


# -- pluggable authenticators ------------------------------------------------------------------


class PlainWithAuthzid:
    """A PLAIN of the application's own, that names an authorisation identity."""

    mechanism = "PLAIN"
    blocking = True

    def __init__(self, password: str) -> None:
        self._password = password
        self.threads: list[threading.Thread] = []

    def begin(self, attempt: syncsmtp.AuthAttempt) -> syncsmtp.SASLExchange:
        self.threads.append(threading.current_thread())
        return _Exchange(f"{attempt.username}\0{attempt.username}\0{self._password}".encode())


class _Exchange:
    server_error = None

    def __init__(self, response: bytes) -> None:
        self._response = response

    def initial_response(self) -> bytes:
        return self._response

    def respond(self, challenge: bytes) -> bytes:
        return self._response

    def refused(self, reply: syncsmtp.Reply) -> bool:
        return False


def test_an_application_authenticator_replaces_a_built_in_one(smtp_server_factory: ServerFactory) -> None:
    smtp = smtp_server_factory(tls="starttls", users={"user": "pw-Kk3"}, auth_mechanisms=("PLAIN",))
    mine = PlainWithAuthzid("pw-Kk3")
    policy = smtp.policy(password=None, authenticators=[mine])
    assert isinstance(mine, syncsmtp.Authenticator) and policy.mechanisms == ("PLAIN",)
    result = syncsmtp.send(make_message(), policy, timeout=10)
    assert result.auth_mechanism == "PLAIN" and smtp.outbox[0].auth_user == "user"
    assert len(mine.threads) == 1 and mine.threads[0] is not threading.current_thread()
    command = next(line for line in smtp.commands[0] if line.startswith(b"AUTH "))
    assert base64.b64decode(command.split()[2]) == b"user\0user\0pw-Kk3"


def test_policy_checks_and_hides_oauth2_settings() -> None:
    policy = syncsmtp.Policy(host="smtp.example.com", username=USER, oauth2_token=GOOD)
    assert GOOD not in repr(policy) and "oauth2_token='<redacted>'" in repr(policy)
    assert policy.mechanisms == ("OAUTHBEARER", "XOAUTH2")
    both = policy.with_options(password="pw", auth_mechanisms=("xoauth2", "plain"))
    assert both.mechanisms == ("XOAUTH2", "PLAIN")
    assert repr(syncsmtp.XOAuth2(GOOD)) == "XOAuth2(OAuth2Token('<redacted>'))"
    assert "pw" not in repr(syncsmtp.Plain("pw"))
    with pytest.raises(ValueError, match="needs oauth2_token"):
        syncsmtp.Policy(host="smtp.example.com", username=USER, password="pw", auth_mechanisms=("XOAUTH2",))
    with pytest.raises(ValueError, match="needs a username"):
        syncsmtp.Policy(host="smtp.example.com", oauth2_token=GOOD)
    with pytest.raises(ValueError, match="not shown") as caught:
        syncsmtp.Policy(host="smtp.example.com", username=USER, oauth2_token="secret\r\nx")
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError, match="callable"):
        syncsmtp.Policy(host="smtp.example.com", username=USER, oauth2_token=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="authenticators"):
        syncsmtp.Policy(host="smtp.example.com", username=USER, authenticators=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="X-OTHER"):
        syncsmtp.Policy(host="smtp.example.com", username=USER, auth_mechanisms=("X-OTHER",))


def test_the_transcript_of_a_pipelined_retry_shows_both_attempts(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    result = syncsmtp.send(make_message(), smtp.policy(oauth2_token=Tokens()), timeout=10)
    lines = [line[:7].strip() for line in result.transcript]
    first = lines.index("C: AUTH")
    assert lines[first:first + 5] == ["C: AUTH", "C: MAIL", "C: RCPT", "C: DATA", "S: 334"]
    assert lines.count("C: MAIL") == 2 and lines.count("C: AUTH") == 2
    assert_hidden(STALE, result.transcript)


def test_check_authenticates_with_a_token(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    tokens = Tokens()
    outcome = syncsmtp.check(smtp.policy(oauth2_token=tokens), timeout=10)
    assert outcome.ok, outcome.error
    assert tokens.calls == [False, True]
    assert_hidden(STALE, repr(outcome))
    assert_hidden(GOOD, repr(outcome))


@pytest.mark.parametrize("extensions", [PIPELINING, LOCK_STEP], ids=["pipelined", "lock-step"])
def test_a_refusal_without_a_challenge_is_refreshed_too(smtp_server_factory: ServerFactory,
                                                        extensions: tuple[str, ...]) -> None:
    # Microsoft 365 answers an expired token with 535 and no failure challenge.
    smtp = server(smtp_server_factory, extensions, require_auth=True)
    smtp.fail("auth", 535, "5.7.3 Authentication unsuccessful", times=1)
    tokens = Tokens(cached=GOOD, fresh=GOOD)
    result = syncsmtp.send(make_message(), smtp.policy(oauth2_token=tokens), timeout=10)
    assert tokens.calls == [False, True] and smtp.connections == 1 and len(smtp.outbox) == 1
    assert result.auth_mechanism == "OAUTHBEARER"


def test_no_retry_when_the_server_took_the_envelope_after_refusing_auth(
    smtp_server_factory: ServerFactory,
) -> None:
    # AUTH refused, then MAIL and RCPT accepted (the server does not require
    # AUTH): the conversation is not what the client expects, so it ends.
    smtp = server(smtp_server_factory)
    smtp.fail("auth", 535, "5.7.3 Authentication unsuccessful", times=1)
    tokens = Tokens(cached=GOOD, fresh=GOOD)
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), smtp.policy(oauth2_token=tokens), timeout=10)
    assert caught.value.reply is not None and caught.value.reply.code == 535
    assert tokens.calls == [False] and smtp.outbox == []


class LoginWithInitialResponse:
    """LOGIN with the user name as its initial response: two steps, so never pipelined."""

    mechanism = "LOGIN"
    blocking = False

    def __init__(self, password: str) -> None:
        self._password = password

    def begin(self, attempt: syncsmtp.AuthAttempt) -> syncsmtp.SASLExchange:
        return _TwoStep(attempt.username.encode(), self._password.encode())


class _TwoStep(_Exchange):
    def __init__(self, first: bytes, then: bytes) -> None:
        super().__init__(first)
        self._then = then

    def respond(self, challenge: bytes) -> bytes:
        return self._then


def test_a_mechanism_of_more_than_one_step_is_not_pipelined(smtp_server_factory: ServerFactory) -> None:
    smtp = smtp_server_factory(tls="starttls", users={"user": "pw-Tt5"}, auth_mechanisms=("LOGIN",),
                               extensions=PIPELINING)
    policy = smtp.policy(password=None, authenticators=[LoginWithInitialResponse("pw-Tt5")])
    result = syncsmtp.send(make_message(), policy, timeout=10)
    assert result.auth_mechanism == "LOGIN" and smtp.outbox[0].auth_user == "user"
    lines = [line[:7].strip() for line in result.transcript]
    first = lines.index("C: AUTH")
    assert lines[first:first + 4] == ["C: AUTH", "S: 334", "C: <red", "S: 235"]
    assert "pw-Tt5" not in "\n".join(result.transcript)


def test_a_slow_token_callable_does_not_hold_up_the_reactor(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    other = smtp_server_factory(tls="starttls", users={"u": "p-Qq1"})
    entered, release = threading.Event(), threading.Event()

    def get_token(refresh: bool) -> str:
        entered.set()
        release.wait(10)
        return GOOD

    outcome: dict[str, Any] = {}

    def slow_send() -> None:
        try:
            outcome["result"] = syncsmtp.send(make_message(), smtp.policy(oauth2_token=get_token), timeout=20)
        except Exception as error:  # reported by the assertion below
            outcome["error"] = error

    sender = threading.Thread(target=slow_send)
    sender.start()
    try:
        assert entered.wait(10)
        # While get_token blocks, the reactor thread serves other sends.
        assert syncsmtp.send(make_message(), other.policy(), timeout=10).accepted == ("bob@example.com",)
    finally:
        release.set()
        sender.join(20)
    assert "error" not in outcome, outcome
    assert outcome["result"].auth_mechanism == "OAUTHBEARER"


def test_the_send_deadline_covers_a_slow_token_callable(smtp_server_factory: ServerFactory) -> None:
    smtp = server(smtp_server_factory)
    release = threading.Event()

    def get_token(refresh: bool) -> str:
        release.wait(10)
        return GOOD

    try:
        with pytest.raises(syncsmtp.SendTimeout) as caught:
            syncsmtp.send(make_message(), smtp.policy(oauth2_token=get_token), timeout=1)
        assert caught.value.stage == "auth" and not caught.value.maybe_delivered
    finally:
        release.set()
    assert smtp.outbox == []
