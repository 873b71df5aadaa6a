"""syncsmtp.send() against a real Postfix (STARTTLS, Dovecot SASL, Maildir delivery) on 127.0.0.1."""

from __future__ import annotations

import email
import email.message
import email.policy
import shutil
import subprocess

import pytest
from postfix import PostfixInstance

import syncsmtp

pytestmark = pytest.mark.postfix


def policy_for(postfix: PostfixInstance, **overrides: object) -> syncsmtp.Policy:
    options: dict[str, object] = {
        "host": postfix.host, "port": postfix.port, "tls": "starttls", "ca_file": postfix.ca_file,
        "username": postfix.username, "password": postfix.password,
    }
    options.update(overrides)
    return syncsmtp.Policy(**options)  # type: ignore[arg-type]


def make_message(to: str = "rcpt@example.com", body: str = "hello\n") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = to
    message["Subject"] = "über test"
    message.set_content(body)
    return message


def parse(delivered: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(delivered, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_starttls_auth_delivery(fresh_postfix: PostfixInstance, mechanism: str) -> None:
    message = make_message()
    result = syncsmtp.send(message, policy_for(fresh_postfix, auth_mechanisms=(mechanism,)), timeout=30)
    assert result.auth_mechanism == mechanism
    assert result.tls is not None
    assert result.reply.code == 250 and "queued as" in result.reply.text
    delivered = parse(fresh_postfix.wait_for(1)[0])
    assert delivered["Subject"] == "über test"
    assert delivered["Message-ID"] == result.message_id
    assert delivered.get_content() == "hello\n"
    assert "ESMTPSA" in delivered["Received"]  # Postfix saw TLS and AUTH


def test_default_mechanism_under_verified_tls_is_pipelined_plain(fresh_postfix: PostfixInstance) -> None:
    # Postfix (through Dovecot) offers PLAIN, LOGIN and CRAM-MD5 after STARTTLS.
    result = syncsmtp.send(make_message(), policy_for(fresh_postfix), timeout=30)
    assert result.auth_mechanism == "PLAIN"
    start = result.transcript.index("C: AUTH PLAIN <redacted>")
    assert result.transcript[start + 1].startswith("C: MAIL FROM:<ann@example.com>")
    assert result.transcript[start + 2] == "C: RCPT TO:<rcpt@example.com>"
    assert result.transcript[start + 3].startswith("S: 235 ")
    assert "ESMTPSA" in parse(fresh_postfix.wait_for(1)[0])["Received"]


def test_body_is_delivered_byte_exact(fresh_postfix: PostfixInstance) -> None:
    body = b".leading dot\n..two dots\n.\nmixed\r\nbare\rcr\nend"
    data = b"Subject: exact\r\nFrom: ann@example.com\r\n\r\n" + body
    syncsmtp.send(data, policy_for(fresh_postfix), timeout=30, sender="ann@example.com",
                  recipients=["rcpt@example.com"])
    delivered = fresh_postfix.wait_for(1)[0]
    # Postfix stores LF line ends; every input line break arrived as one line break.
    assert delivered.endswith(b"\n\n.leading dot\n..two dots\n.\nmixed\nbare\ncr\nend\n")


def test_ten_mib_message(fresh_postfix: PostfixInstance) -> None:
    body = ("abcdefghij" * 7 + "\n") * (10 * 1024 * 1024 // 71)
    syncsmtp.send(make_message(body=body), policy_for(fresh_postfix), timeout=120)
    delivered = parse(fresh_postfix.wait_for(1, seconds=60)[0])
    assert delivered.get_content() == body


def test_wrong_password(postfix: PostfixInstance) -> None:
    with pytest.raises(syncsmtp.AuthDeclinedError) as caught:
        syncsmtp.send(make_message(), policy_for(postfix, password="nope-not-it"), timeout=30)
    assert caught.value.reply is not None and caught.value.reply.code == 535
    assert "nope-not-it" not in "\n".join(caught.value.transcript)


def test_untrusted_certificate(postfix: PostfixInstance) -> None:
    with pytest.raises(syncsmtp.CertificateError):
        syncsmtp.send(make_message(), policy_for(postfix, ca_file=None), timeout=30)


def test_relay_refused_without_auth(postfix: PostfixInstance) -> None:
    policy = policy_for(postfix, username=None, password=None)
    with pytest.raises(syncsmtp.RecipientsRefused) as caught:
        syncsmtp.send(make_message(to="someone@elsewhere.test"), policy, timeout=30)
    reply = caught.value.refused["someone@elsewhere.test"]
    assert reply.code == 554 and "Relay access denied" in reply.text


def test_some_recipients_refused(fresh_postfix: PostfixInstance) -> None:
    policy = policy_for(fresh_postfix, username=None, password=None)
    result = syncsmtp.send(make_message(to="rcpt@example.com, other@elsewhere.test"), policy, timeout=30)
    assert result.accepted == ("rcpt@example.com",)
    assert result.refused["other@elsewhere.test"].code == 554
    assert len(fresh_postfix.wait_for(1)) == 1


def test_auth_needs_tls_at_postfix(postfix: PostfixInstance) -> None:
    # Postfix offers AUTH only after STARTTLS; a plaintext session cannot authenticate.
    policy = policy_for(postfix, tls="none", allow_plaintext_auth=True)
    with pytest.raises(syncsmtp.AuthRequiredError):
        syncsmtp.send(make_message(), policy, timeout=30)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_agrees(fresh_postfix: PostfixInstance) -> None:
    """The reference client delivers through the same harness, as syncsmtp does."""
    command = [
        "swaks", "--server", f"127.0.0.1:{fresh_postfix.port}", "--tls", "--auth", "PLAIN",
        "--auth-user", fresh_postfix.username, "--auth-password", fresh_postfix.password,
        "--from", "ann@example.com", "--to", "rcpt@example.com", "--header", "Subject: swaks",
        "--body", "from swaks", "--tls-verify", "--tls-ca-path", fresh_postfix.ca_file,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    syncsmtp.send(make_message(), policy_for(fresh_postfix, auth_mechanisms=("PLAIN",)), timeout=30)
    subjects = sorted(parse(raw)["Subject"] for raw in fresh_postfix.wait_for(2))
    assert subjects == ["swaks", "über test"]


def test_international_address_with_smtputf8(fresh_postfix: PostfixInstance) -> None:
    result = syncsmtp.send(make_message(to="jürgen@example.com"), policy_for(fresh_postfix), timeout=30)
    assert result.accepted == ("jürgen@example.com",)
    assert "C: MAIL FROM:<ann@example.com> SIZE=" in "\n".join(result.transcript)
    assert any(line.endswith("SMTPUTF8") for line in result.transcript if line.startswith("C: MAIL"))
    delivered = parse(fresh_postfix.wait_for(1)[0])
    assert delivered["To"] == "jürgen@example.com"


# -- CHUNKING: Postfix offers it, so messages go as BDAT ---------------------------------------------


@pytest.mark.parametrize("chunking", [True, False])
def test_bdat_and_data_deliver_the_same_bytes(fresh_postfix: PostfixInstance, chunking: bool) -> None:
    body = b".leading dot\n..two dots\n.\nmixed\r\nbare\rcr\nend"
    data = b"Subject: exact\r\nFrom: ann@example.com\r\n\r\n" + body
    result = syncsmtp.send(data, policy_for(fresh_postfix, chunking=chunking), timeout=30,
                           sender="ann@example.com", recipients=["rcpt@example.com"])
    transcript = "\n".join(result.transcript)
    assert ("in BDAT chunks" in transcript) is chunking
    assert ("C: DATA" in transcript) is not chunking
    delivered = fresh_postfix.wait_for(1)[0]
    assert delivered.endswith(b"\n\n.leading dot\n..two dots\n.\nmixed\nbare\ncr\nend\n")


def test_bdat_over_a_reused_connection(fresh_postfix: PostfixInstance) -> None:
    with syncsmtp.Mailer(policy_for(fresh_postfix)) as mailer:
        results = [mailer.send(make_message(body=f"message {n}\n"), timeout=30) for n in range(5)]
    assert all("in BDAT chunks" in "\n".join(r.transcript) for r in results[1:])
    bodies = sorted(parse(m).get_content() for m in fresh_postfix.wait_for(5))
    assert bodies == [f"message {n}\n" for n in range(5)]


def test_bdat_with_every_recipient_refused_delivers_nothing(fresh_postfix: PostfixInstance) -> None:
    # MAIL, RCPT and BDAT LAST go in one write; the refusal of the only RCPT decides.
    policy = policy_for(fresh_postfix, username=None, password=None)
    with pytest.raises(syncsmtp.RecipientsRefused) as caught:
        syncsmtp.send(make_message(to="someone@elsewhere.test"), policy, timeout=30)
    assert not caught.value.maybe_delivered
    assert any("in BDAT chunks" in line for line in caught.value.transcript)
    # The session is still usable afterwards (RSET, then the next message).
    with syncsmtp.Mailer(policy) as mailer:
        with pytest.raises(syncsmtp.RecipientsRefused):
            mailer.send(make_message(to="someone@elsewhere.test"), timeout=30)
        assert mailer.send(make_message(), timeout=30).accepted == ("rcpt@example.com",)
    assert len(fresh_postfix.wait_for(1)) == 1


def test_later_sends_resume_the_tls_session_of_the_same_policy_only(
    fresh_postfix: PostfixInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later connection resumes an earlier session (no certificate sent or
    checked again: OpenSSL calls no verify callback), within one policy only."""
    from syncsmtp import _tls

    verified: list[int] = []
    original = _tls._ClientTLS._leaf_check

    def counting(self: _tls._ClientTLS) -> object:
        verify = original(self)

        def verify_and_count(*args: object) -> bool:
            verified.append(args[3])  # type: ignore[arg-type]
            return verify(*args)  # type: ignore[arg-type]

        return verify_and_count

    monkeypatch.setattr(_tls._ClientTLS, "_leaf_check", counting)
    # A policy no other test uses: TLS sessions are kept per policy (value).
    policy = policy_for(fresh_postfix, local_hostname="resumption.test")
    handshakes = []
    for _ in range(3):
        before = len(verified)
        result = syncsmtp.send(make_message(), policy, timeout=30)
        assert result.tls is not None and result.auth_mechanism is not None
        handshakes.append(len(verified) - before)
    assert handshakes[0] >= 1 and 0 in verified[:handshakes[0]]  # the leaf was checked
    assert handshakes[1:] == [0, 0]  # resumed
    other = policy.with_options(auth_mechanisms=("LOGIN",))
    before = len(verified)
    syncsmtp.send(make_message(), other, timeout=30)
    assert len(verified) > before  # another policy: a full handshake
    assert len(fresh_postfix.wait_for(4)) == 4
