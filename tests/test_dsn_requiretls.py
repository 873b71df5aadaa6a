"""Delivery status notifications (DSN, RFC 3461) and REQUIRETLS (RFC 8689):
checked before connecting, on the wire as the RFCs spell them, refused before
MAIL FROM when the server or the session cannot honour them; against the test
server (which records each command's parameters) and the suite's Postfix."""

from __future__ import annotations

import email
import email.message
import email.policy
import re
import smtplib
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from postfix import PostfixInstance

import syncsmtp
from syncsmtp.dsn import utf8_addr_xtext, xtext
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]

_DSN = ("DSN", "8BITMIME", "SIZE 52428800")
_BOTH = ("DSN", "REQUIRETLS", "8BITMIME", "SIZE 52428800")
# The server's extensions for each way a message can go: lock-step, pipelined, BDAT.
_MODES = {
    "lock-step": (),
    "pipelining": ("PIPELINING",),
    "bdat": ("PIPELINING", "CHUNKING"),
}


def make_message(subject: str = "test", to: str = "bob@example.com, carol@example.com",
                 **headers: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("hello\n")
    return message


def mail_lines(server: SMTPTestServer) -> list[bytes]:
    """Every MAIL FROM the server received, on any connection."""
    return [line for lines in server.commands for line in lines if line.upper().startswith(b"MAIL")]


# -- checked before connecting -------------------------------------------------------------------


@pytest.mark.parametrize(("options", "parameter", "kind"), [
    ({"notify": ("NEVER", "FAILURE")}, "notify", ValueError),
    ({"notify": ("FAILURE", "FAILURE")}, "notify", ValueError),
    ({"notify": ("BOUNCE",)}, "notify", ValueError),
    ({"notify": "SUCCESS,NEVER"}, "notify", ValueError),
    ({"notify": 5}, "notify", TypeError),
    ({"notify": (b"FAILURE",)}, "notify", TypeError),
    ({"ret": "ALL"}, "ret", ValueError),
    ({"ret": b"FULL"}, "ret", ValueError),
    ({"envid": ""}, "envid", ValueError),
    ({"envid": "order\r\n42"}, "envid", ValueError),
    ({"envid": "bestellung-ü"}, "envid", ValueError),
    ({"envid": "x" * 101}, "envid", ValueError),
    ({"envid": "+" * 34}, "envid", ValueError),  # 102 characters once encoded
    ({"envid": 42}, "envid", TypeError),
    ({"orcpt": "yes"}, "orcpt", TypeError),
    ({"required": 1}, "required", TypeError),
])
def test_a_bad_dsn_names_its_parameter(options: dict[str, Any], parameter: str,
                                       kind: type[Exception]) -> None:
    with pytest.raises(kind) as caught:
        syncsmtp.DSN(**options)
    text = str(caught.value)
    assert re.search(rf"\bDSN {parameter}\b", text), text
    others = {"notify", "ret", "envid", "orcpt", "required"} - {parameter}
    assert not any(re.search(rf"\b{other}\b", text) for other in others), text


def test_dsn_takes_words_in_any_case_and_keeps_them_in_order() -> None:
    assert syncsmtp.DSN(notify="failure, delay").notify == ("FAILURE", "DELAY")
    assert syncsmtp.DSN(notify={"DELAY", "SUCCESS"}).notify == ("SUCCESS", "DELAY")  # type: ignore[arg-type]
    assert syncsmtp.DSN(notify=["never"]).notify == ("NEVER",)  # type: ignore[arg-type]
    assert syncsmtp.DSN(notify=("Delay", "failure")).notify == ("FAILURE", "DELAY")
    assert syncsmtp.DSN(ret="hdrs").ret == "HDRS"
    longest = syncsmtp.DSN(envid="x" * 100)
    assert longest.envid == "x" * 100
    assert syncsmtp.DSN() == syncsmtp.DSN(notify=(), ret=None, envid=None, orcpt=True, required=True)


def test_xtext_encodes_plus_equals_space_and_controls() -> None:
    assert xtext("a+b=c") == "a+2Bb+3Dc"
    assert xtext("order 42\t~!") == "order+2042+09~!"
    assert utf8_addr_xtext("jürgen+x@example.com") == "j\\x{FC}rgen\\x{2B}x@example.com"


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda m, p: syncsmtp.send(m, p, timeout=10, dsn="FAILURE"), "dsn"),  # type: ignore[arg-type]
    (lambda m, p: syncsmtp.send(m, p, timeout=10, require_tls="yes"), "require_tls"),  # type: ignore[arg-type]
    (lambda m, p: syncsmtp.send(m, p, timeout=10, require_tls=1), "require_tls"),  # type: ignore[arg-type]
])
def test_bad_options_of_send_fail_before_connecting(
    smtp_server: SMTPTestServer, call: Callable[..., object], parameter: str
) -> None:
    with pytest.raises(TypeError, match=rf"send\(\) {parameter} must be"):
        call(make_message(), smtp_server.policy())
    assert smtp_server.connections == 0


@pytest.mark.parametrize("message", [
    make_message(TLS_Required="No"),
    make_message(TLS_Required=" no "),
    b"From: ann@example.com\r\nTLS-Required:\r\n No\r\nSubject: x\r\n\r\nbody\r\n",
    "Subject: x\ntls-required: NO\n\nbody\n",
], ids=["EmailMessage", "EmailMessage lower case", "bytes, folded", "str"])
def test_require_tls_refuses_a_message_that_says_tls_required_no(
    smtp_server_factory: ServerFactory, message: email.message.EmailMessage | bytes | str
) -> None:
    server = smtp_server_factory(extensions=_BOTH)
    envelope: dict[str, Any] = {} if isinstance(message, email.message.Message) else {
        "sender": "ann@example.com", "recipients": ["bob@example.com"]}
    with pytest.raises(syncsmtp.MessageError, match="TLS-Required: No"):
        syncsmtp.send(message, server.policy(), timeout=10, require_tls=True, **envelope)
    assert server.connections == 0
    # Without REQUIRETLS the header is the message's own business.
    syncsmtp.send(message, server.policy(), timeout=10, **envelope)
    assert "REQUIRETLS" not in server.wait_for(1)[0].mail_options
    # A body line that only looks like the header is no header.
    syncsmtp.send(b"Subject: x\r\n\r\nTLS-Required: No\r\n", server.policy(), timeout=10,
                  require_tls=True, sender="ann@example.com", recipients=["bob@example.com"])
    assert "REQUIRETLS" in server.wait_for(2)[1].mail_options


def test_bad_options_of_mailer_fail_before_connecting(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        with pytest.raises(TypeError, match=r"Mailer\.send\(\) dsn must be"):
            mailer.send(make_message(), timeout=10, dsn={"notify": "FAILURE"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"Mailer\.send_many\(\) require_tls must be"):
            mailer.send_many([make_message()], timeout=10, require_tls=None)  # type: ignore[arg-type]
    assert smtp_server.connections == 0


# -- what reaches the server ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(_MODES))
def test_dsn_parameters_on_the_wire(smtp_server_factory: ServerFactory, mode: str) -> None:
    server = smtp_server_factory(extensions=(*_MODES[mode], *_DSN))
    dsn = syncsmtp.DSN(notify=("FAILURE", "DELAY"), ret="HDRS", envid="a+b=c d")
    message = make_message(to="bob@example.com, carol+tag@example.com")
    result = syncsmtp.send(message, server.policy(), timeout=10, dsn=dsn)
    assert result.accepted == ("bob@example.com", "carol+tag@example.com")
    received = server.wait_for(1)[0]
    assert received.via == ("BDAT" if mode == "bdat" else "DATA")
    assert received.mail_options[1:] == ("RET=HDRS", "ENVID=a+2Bb+3Dc+20d")
    assert received.rcpt_options == (
        ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;bob@example.com"),
        ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;carol+2Btag@example.com"),
    )
    (mail,) = mail_lines(server)
    assert re.fullmatch(rb"MAIL FROM:<ann@example\.com> SIZE=\d+ RET=HDRS ENVID=a\+2Bb\+3Dc\+20d", mail)
    assert b"RCPT TO:<bob@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@example.com" \
        in server.commands[0]
    assert any(line.startswith("C: MAIL FROM:<ann@example.com> SIZE=") and line.endswith(
        " RET=HDRS ENVID=a+2Bb+3Dc+20d") for line in result.transcript)


def test_only_the_dsn_parameters_asked_for(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", *_DSN))
    syncsmtp.send(make_message(to="bob@example.com"), server.policy(), timeout=10,
                  dsn=syncsmtp.DSN(notify="NEVER", orcpt=False))
    syncsmtp.send(make_message(to="bob@example.com"), server.policy(), timeout=10,
                  dsn=syncsmtp.DSN(ret="FULL"))
    first, second = server.wait_for(2)
    assert [o for o in first.mail_options if not o.startswith("SIZE=")] == []
    assert first.rcpt_options == (("NOTIFY=NEVER",),)
    assert second.mail_options[1:] == ("RET=FULL",)
    assert second.rcpt_options == (("ORCPT=rfc822;bob@example.com",),)


@pytest.mark.parametrize("mode", ["lock-step", "pipelining"])
def test_dsn_not_offered_fails_before_mail(smtp_server_factory: ServerFactory, mode: str) -> None:
    server = smtp_server_factory(extensions=(*_MODES[mode], "8BITMIME"), users={"user": "password"})
    with pytest.raises(syncsmtp.ExtensionNotOfferedError) as caught:
        syncsmtp.send(make_message(), server.policy(), timeout=10, dsn=syncsmtp.DSN(notify="SUCCESS"))
    error = caught.value
    assert error.extension == "DSN" and isinstance(error, smtplib.SMTPNotSupportedError)
    assert "does not offer DSN" in str(error) and "required=False" in str(error)
    assert error.stage == "mail" and not error.maybe_delivered and error.smtp_code == -1
    assert mail_lines(server) == [] and server.outbox == []
    assert not any(line.startswith("C: MAIL") for line in error.transcript)


def test_dsn_not_required_is_sent_without(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", "8BITMIME"))
    dsn = syncsmtp.DSN(notify="SUCCESS", envid="x", required=False)
    result = syncsmtp.send(make_message(), server.policy(), timeout=10, dsn=dsn)
    assert len(result.accepted) == 2
    received = server.wait_for(1)[0]
    assert received.mail_options == () and received.rcpt_options == ((), ())


def test_test_server_refuses_dsn_parameters_it_does_not_offer(smtp_server_factory: ServerFactory) -> None:
    """What makes the test above meaningful: had the parameters been sent, 555."""
    server = smtp_server_factory(tls="none", extensions=("8BITMIME",))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo()
        assert client.mail("ann@example.com", ["RET=HDRS"]) [0] == 555
        client.rset()
        assert client.mail("ann@example.com", ["REQUIRETLS"])[0] == 555
        client.rset()
        assert client.mail("ann@example.com")[0] == 250
        assert client.rcpt("bob@example.com", ["NOTIFY=FAILURE"])[0] == 555


def test_test_server_checks_dsn_syntax(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", extensions=("DSN",))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("dsn") and not client.has_extn("requiretls")
        assert client.mail("ann@example.com", ["RET=SOME"])[0] == 501
        client.rset()
        assert client.mail("ann@example.com", ["ENVID=a+b"])[0] == 501
        client.rset()
        assert client.mail("ann@example.com", ["ENVID=a+2Bb"])[0] == 250
        assert client.rcpt("bob@example.com", ["NOTIFY=NEVER,FAILURE"])[0] == 501
        assert client.rcpt("bob@example.com", ["ORCPT=bob@example.com"])[0] == 501
        assert client.rcpt("bob@example.com", ["NOTIFY=DELAY", "ORCPT=rfc822;bob@example.com"])[0] == 250


# -- REQUIRETLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(_MODES))
def test_require_tls_over_verified_starttls(smtp_server_factory: ServerFactory, mode: str) -> None:
    server = smtp_server_factory(extensions=(*_MODES[mode], *_BOTH), users={"user": "password"})
    result = syncsmtp.send(make_message(), server.policy(), timeout=10, require_tls=True,
                           dsn=syncsmtp.DSN(envid="order-42"))
    assert result.tls is not None
    received = server.wait_for(1)[0]
    assert received.tls and received.mail_options[1:] == ("ENVID=order-42", "REQUIRETLS")
    (mail,) = mail_lines(server)
    assert mail.endswith(b" ENVID=order-42 REQUIRETLS")


def test_require_tls_over_implicit_tls(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="implicit", extensions=("PIPELINING", *_BOTH))
    syncsmtp.send(make_message(), server.policy(), timeout=10, require_tls=True)
    assert "REQUIRETLS" in server.wait_for(1)[0].mail_options


@pytest.mark.parametrize("mode", ["lock-step", "pipelining"])
def test_require_tls_not_offered(smtp_server_factory: ServerFactory, mode: str) -> None:
    server = smtp_server_factory(extensions=(*_MODES[mode], *_DSN), users={"user": "password"})
    with pytest.raises(syncsmtp.ExtensionNotOfferedError) as caught:
        syncsmtp.send(make_message(), server.policy(), timeout=10, require_tls=True)
    assert caught.value.extension == "REQUIRETLS"
    assert "does not offer REQUIRETLS" in str(caught.value)
    assert mail_lines(server) == [] and server.outbox == []


@pytest.mark.parametrize("tls", ["none", "opportunistic"])
def test_require_tls_over_plaintext(smtp_server_factory: ServerFactory, tls: str) -> None:
    # REQUIRETLS listed, but a server without TLS (as the RFC says) does not announce it; the
    # client refuses on the plaintext alone.
    server = smtp_server_factory(tls="none", extensions=("PIPELINING", *_BOTH))
    with pytest.raises(syncsmtp.RequireTLSError) as caught:
        syncsmtp.send(make_message(), server.policy(tls=tls), timeout=10, require_tls=True)
    error = caught.value
    assert isinstance(error, syncsmtp.TLSError) and isinstance(error, smtplib.SMTPNotSupportedError)
    assert "not encrypted" in str(error)
    assert mail_lines(server) == [] and server.connections == 1


def test_require_tls_without_verification(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", *_BOTH))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", syncsmtp.InsecureTLSWarning)
        policy = server.policy(verify=False)
    with pytest.raises(syncsmtp.RequireTLSError, match=r"verify=False") as caught:
        syncsmtp.send(make_message(), policy, timeout=10, require_tls=True)
    assert caught.value.transcript and mail_lines(server) == []
    # The same session takes a message without REQUIRETLS.
    syncsmtp.send(make_message(), policy, timeout=10)
    assert "REQUIRETLS" not in server.wait_for(1)[0].mail_options


def test_the_test_server_announces_requiretls_only_over_tls(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=_BOTH)
    check = syncsmtp.check(server.policy(), timeout=10)
    assert check.ok
    assert check.capabilities_before_tls is not None and check.capabilities_after_tls is not None
    assert "DSN" in check.capabilities_before_tls.keywords
    assert "REQUIRETLS" not in check.capabilities_before_tls.keywords
    assert "REQUIRETLS" in check.capabilities_after_tls.keywords


# -- Mailer ----------------------------------------------------------------------------------------


def test_mailer_send_and_a_refusal_on_a_reused_connection(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", *_DSN), users={"user": "password"})
    with syncsmtp.Mailer(server.policy()) as mailer:
        mailer.send(make_message("one"), timeout=10, dsn=syncsmtp.DSN(envid="one"))
        with pytest.raises(syncsmtp.ExtensionNotOfferedError):
            mailer.send(make_message("two"), timeout=10, require_tls=True)
        mailer.send(make_message("three"), timeout=10)
    one, three = server.wait_for(2)
    assert server.connections == 1
    assert one.mail_options[1:] == ("ENVID=one",) and three.mail_options[1:] == ()
    assert three.rcpt_options == ((), ())


def test_send_many_batch_options_and_per_item_ones(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(extensions=("PIPELINING", *_BOTH), users={"user": "password"})
    batch = syncsmtp.DSN(notify="FAILURE", orcpt=False)
    items: list[Any] = [
        make_message("batch"),
        syncsmtp.Outgoing(make_message("own"), dsn=syncsmtp.DSN(envid="own-1", orcpt=False)),
        syncsmtp.Outgoing(b"Subject: raw\r\n\r\nx\r\n", "ann@example.com", ["bob@example.com"],
                          require_tls=False),
        ("Subject: tuple\r\n\r\nx\r\n", "ann@example.com", "dan@example.com"),
        syncsmtp.Outgoing(make_message("bad"), dsn="FAILURE"),  # type: ignore[arg-type]
    ]
    with syncsmtp.Mailer(server.policy(), connections=2) as mailer:
        report = mailer.send_many(items, timeout=10, dsn=batch, require_tls=True)
    assert [type(outcome).__name__ for outcome in report.results] == [
        "SendResult", "SendResult", "SendResult", "SendResult", "MessageError"]
    assert "Outgoing dsn must be" in str(report.results[4])
    received = {m.message["Subject"]: m for m in server.wait_for(4)}
    assert received["batch"].mail_options[1:] == ("REQUIRETLS",)
    assert received["batch"].rcpt_options == (("NOTIFY=FAILURE",), ("NOTIFY=FAILURE",))
    assert received["own"].mail_options[1:] == ("ENVID=own-1", "REQUIRETLS")
    assert received["own"].rcpt_options == ((), ())
    assert received["raw"].mail_options[1:] == () and received["raw"].rcpt_options == (("NOTIFY=FAILURE",),)
    assert received["tuple"].mail_options[1:] == ("REQUIRETLS",)


# -- Postfix --------------------------------------------------------------------------------------


def _postfix_policy(postfix: PostfixInstance) -> syncsmtp.Policy:
    return syncsmtp.Policy(host=postfix.host, port=postfix.port, tls="starttls", ca_file=postfix.ca_file,
                           username=postfix.username, password=postfix.password)


def _parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


@pytest.mark.postfix
def test_postfix_reports_a_success(fresh_postfix: PostfixInstance) -> None:
    dsn = syncsmtp.DSN(notify="SUCCESS", ret="HDRS", envid="order+42=x")
    result = syncsmtp.send(make_message("dsn", to="rcpt@example.com"), _postfix_policy(fresh_postfix),
                           timeout=30, dsn=dsn)
    assert result.accepted == ("rcpt@example.com",) and result.reply.code == 250
    assert "C: RCPT TO:<rcpt@example.com> NOTIFY=SUCCESS ORCPT=rfc822;rcpt@example.com" in result.transcript
    # The message, and the success report Postfix sends back to ann@example.com (same Maildir).
    messages = [_parse(raw) for raw in fresh_postfix.wait_for(2)]
    (report,) = [m for m in messages if m.get_content_type() == "multipart/report"]
    assert report["To"] == "ann@example.com"
    status = report.as_string()
    assert "Original-Envelope-Id: order+42=x" in status
    assert "Original-Recipient: rfc822;rcpt@example.com" in status
    assert re.search(r"Action: delivered", status)


@pytest.mark.postfix
def test_postfix_takes_an_international_original_recipient(fresh_postfix: PostfixInstance) -> None:
    result = syncsmtp.send(make_message("utf8", to="jürgen@example.com"), _postfix_policy(fresh_postfix),
                           timeout=30, dsn=syncsmtp.DSN(notify="FAILURE"))
    assert result.accepted == ("jürgen@example.com",)
    assert any(line.endswith("NOTIFY=FAILURE ORCPT=utf-8;j\\x{FC}rgen@example.com")
               for line in result.transcript)
    assert _parse(fresh_postfix.wait_for(1)[0])["Subject"] == "utf8"


@pytest.mark.postfix
def test_postfix_does_not_offer_requiretls(postfix: PostfixInstance) -> None:
    with pytest.raises(syncsmtp.ExtensionNotOfferedError) as caught:
        syncsmtp.send(make_message(to="rcpt@example.com"), _postfix_policy(postfix), timeout=30,
                      require_tls=True)
    assert caught.value.extension == "REQUIRETLS"
    transcript = caught.value.transcript
    assert any(line.startswith("C: STARTTLS") for line in transcript)
    assert not any(line.startswith("C: MAIL") for line in transcript)
