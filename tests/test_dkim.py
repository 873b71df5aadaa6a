"""DKIM signing: what the server receives verifies with dkimpy's verifier.

Keys are made here with ``cryptography``; the public key is served to the
verifier by a stub DNS function (no network). Messages go through a real SMTP
conversation with the project's test server (DATA and BDAT) and with the
suite's Postfix, and the bytes that arrived are verified.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import django
import dkim  # type: ignore[import-untyped]
import flask
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core import mail
from django.test import override_settings
from django.views.debug import SafeExceptionReporterFilter
from postfix import PostfixInstance

import syncsmtp
import syncsmtp.flask
from syncsmtp.testing import ReceivedMessage, SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
DOMAIN = "example.com"
KINDS = ["rsa", "ed25519"]
DATA_AND_BDAT = [("8BITMIME",), ("PIPELINING", "CHUNKING", "8BITMIME")]
_PLAIN = serialization.NoEncryption()


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _PLAIN)


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED25519 = ed25519.Ed25519PrivateKey.generate()
_OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEYS: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
    "rsa": _RSA, "ed25519": _ED25519, "other-rsa": _OTHER_RSA,
}


def txt_record(kind: str) -> bytes:
    """The TXT record of the key, built here from the key (not by syncsmtp)."""
    public = KEYS[kind].public_key()
    if kind.endswith("rsa"):
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=" + kind.rpartition("-")[2].encode() + b"; p=" + base64.b64encode(raw)


def signer(kind: str, selector: str = "s1", **options: Any) -> syncsmtp.DKIM:
    return syncsmtp.DKIM(DOMAIN, selector, _pem(KEYS[kind]), **options)


def verify(data: bytes, kind: str, selector: str = "s1") -> bool:
    """dkimpy's verdict on ``data``, with the key served for ``selector``."""
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append(name)
        return txt_record(kind) if name == f"{selector}._domainkey.{DOMAIN}.".encode() else None

    verdict = dkim.verify(data, dnsfunc=dns)
    assert asked, "the verifier looked up no key"
    return bool(verdict)


def make_message(body: str = "hello\n", subject: str = "dkim test") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = subject
    message.set_content(body)
    return message


def signature_of(received: ReceivedMessage) -> dict[bytes, bytes]:
    assert received.data.startswith(b"DKIM-Signature: ")
    return signature_of_header(received.data)


def signature_of_header(data: bytes) -> dict[bytes, bytes]:
    """The tags of the first DKIM-Signature in ``data``, white space removed."""
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    value = str(parsed["DKIM-Signature"]).replace("\r\n", "").replace("\n", "")
    return dict(
        (name.strip().encode(), text.strip().replace(" ", "").replace("\t", "").encode())
        for name, _, text in (item.partition("=") for item in value.split(";") if item.strip())
    )


# -- over a real SMTP conversation with the test server ----------------------------------------------


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
@pytest.mark.parametrize("kind", KINDS)
def test_signed_message_verifies(smtp_server_factory: ServerFactory, kind: str,
                                 extensions: tuple[str, ...]) -> None:
    server = smtp_server_factory(tls="none", extensions=extensions)
    policy = server.policy().with_options(dkim=signer(kind))
    syncsmtp.send(make_message(".starts with a dot\n..two\n.\nend\n"), policy, timeout=30)
    (received,) = server.wait_for(1)
    assert received.via == ("BDAT" if "CHUNKING" in extensions else "DATA")
    assert verify(received.data, kind)
    fields = signature_of(received)
    assert fields[b"a"] == (b"rsa-sha256" if kind == "rsa" else b"ed25519-sha256")
    assert fields[b"c"] == b"relaxed/relaxed"
    assert (fields[b"d"], fields[b"s"]) == (b"example.com", b"s1")
    # Each header the default list names and the message has; From twice, so none can be added.
    assert sorted(fields[b"h"].split(b":")) == sorted([
        b"date", b"message-id", b"from", b"to", b"subject", b"content-type",
        b"content-transfer-encoding", b"mime-version", b"from",
    ])
    assert received.data.endswith(b"\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nend\r\n")
    if received.via == "DATA":  # stuffed on the wire, unstuffed by the server: signed unstuffed
        assert b"\r\n\r\n..starts with a dot\r\n...two\r\n..\r\nend\r\n.\r\n" in received.raw


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
def test_tampering_breaks_the_signature(smtp_server_factory: ServerFactory,
                                        extensions: tuple[str, ...]) -> None:
    server = smtp_server_factory(tls="none", extensions=extensions)
    syncsmtp.send(make_message("pay 10 EUR\n"), server.policy(dkim=signer("rsa")), timeout=30)
    data = server.wait_for(1)[0].data
    assert verify(data, "rsa")
    assert not verify(data.replace(b"pay 10 EUR", b"pay 99 EUR"), "rsa")
    assert not verify(data.replace(b"Subject: dkim test", b"Subject: dkim TEST"), "rsa")
    assert not verify(data, "other-rsa")  # another key published under the selector


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
@pytest.mark.parametrize("kind", KINDS)
def test_eight_bit_utf8_message_verifies(smtp_server_factory: ServerFactory, kind: str,
                                         extensions: tuple[str, ...]) -> None:
    server = smtp_server_factory(tls="none", extensions=extensions)
    message = make_message(subject="Grüße aus Köln")
    message.set_content("Grüße, naïve café — ünïcödé\n.ñ at the start\n", cte="8bit")
    syncsmtp.send(message, server.policy(dkim=signer(kind)), timeout=30)
    (received,) = server.wait_for(1)
    assert "Grüße, naïve café".encode() in received.data  # 8-bit on the wire, as signed
    assert verify(received.data, kind)


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
@pytest.mark.parametrize("kind", KINDS)
def test_multipart_with_attachment_verifies(smtp_server_factory: ServerFactory, kind: str,
                                            extensions: tuple[str, ...]) -> None:
    server = smtp_server_factory(tls="none", extensions=extensions)
    message = make_message("see the attachment\n.dot line\n")
    message.add_alternative("<p>see the attachment</p>\n", subtype="html")
    message.add_attachment(bytes(range(256)) * 300, maintype="application", subtype="octet-stream",
                           filename="data.bin")
    message.add_attachment(".a text file\nwith a dot line first\n", filename="notes.txt")
    syncsmtp.send(message, server.policy(dkim=signer(kind)), timeout=30)
    (received,) = server.wait_for(1)
    assert verify(received.data, kind)
    parsed = received.message
    assert parsed.is_multipart()
    attachments = {part.get_filename(): part.get_content() for part in parsed.iter_attachments()}
    assert attachments["data.bin"] == bytes(range(256)) * 300


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
@pytest.mark.parametrize("kind", KINDS)
def test_bytes_with_any_line_ends_verify(smtp_server_factory: ServerFactory, kind: str,
                                         extensions: tuple[str, ...]) -> None:
    """Signed after the line ends become CRLF, as the server receives them."""
    server = smtp_server_factory(tls="none", extensions=extensions)
    data = (b"From: ann@example.com\nTo: bob@example.com\r\nSubject: raw\r\n\n"
            b".first line\nbare lf\rbare cr\r\n..two dots\n.\nno final line break")
    syncsmtp.send(data, server.policy(dkim=signer(kind)), timeout=30,
                  sender="ann@example.com", recipients=["bob@example.com"])
    (received,) = server.wait_for(1)
    assert received.data.endswith(b"\r\n\r\n.first line\r\nbare lf\r\nbare cr\r\n..two dots\r\n.\r\n"
                                  b"no final line break\r\n")
    assert verify(received.data, kind)


def test_headers_replace_the_default_list(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    dkim_options = signer("ed25519", headers=["From", "Subject", "X-Campaign"])
    message = make_message()
    message["X-Campaign"] = "spring"
    syncsmtp.send(message, server.policy(dkim=dkim_options), timeout=30)
    (received,) = server.wait_for(1)
    assert signature_of(received)[b"h"] == b"from:subject:x-campaign"
    assert verify(received.data, "ed25519")
    # To is not signed now: changing it keeps the signature; changing X-Campaign does not.
    assert verify(received.data.replace(b"To: bob@", b"To: eve@"), "ed25519")
    assert not verify(received.data.replace(b"X-Campaign: spring", b"X-Campaign: autumn"), "ed25519")


@pytest.mark.parametrize("extensions", DATA_AND_BDAT, ids=["DATA", "BDAT"])
def test_mailer_send_and_send_many_sign_every_message(smtp_server_factory: ServerFactory,
                                                      extensions: tuple[str, ...]) -> None:
    server = smtp_server_factory(tls="none", extensions=extensions)
    policy = server.policy(dkim=signer("rsa", selector="mail-2024"))
    with syncsmtp.Mailer(policy, connections=2) as mailer:
        mailer.send(make_message("one\n"), timeout=30)
        report = mailer.send_many(
            [make_message("two\n"), (b"From: ann@example.com\r\n\r\n.three\r\n", "ann@example.com",
                                     ["bob@example.com"]),
             syncsmtp.Outgoing(make_message("four\n"), "ann@example.com", ["carol@example.com"])],
            timeout=30,
        )
    assert all(isinstance(outcome, syncsmtp.SendResult) for outcome in report.results), report.results
    received = server.wait_for(4)
    assert len(received) == 4
    for item in received:
        assert verify(item.data, "rsa", selector="mail-2024"), item.data


# -- checked before any connection ---------------------------------------------------------------


def test_a_message_without_from_is_refused_before_connecting(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with pytest.raises(syncsmtp.MessageError, match="no From header"):
        syncsmtp.send(b"To: bob@example.com\r\n\r\nbody\r\n", server.policy(dkim=signer("rsa")),
                      timeout=30, sender="ann@example.com", recipients=["bob@example.com"])
    assert server.outbox == []
    assert server.connections == 0


_ENCRYPTED = _RSA.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"passphrase"))
_EC = _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize(("arguments", "words"), [
    ((DOMAIN, "s1", b"not a key"), ["private_key", "PEM private key"]),
    ((DOMAIN, "s1", _ENCRYPTED), ["private_key", "not encrypted"]),
    ((DOMAIN, "s1", _EC), ["not an RSA or Ed25519 key", "an EC key"]),
    ((DOMAIN, "s1", 5), ["private_key", "PEM"]),
    (("example.com; s=evil", "s1", _pem(_ED25519)), ["domain", "DNS name"]),
    (("example.com\r\nX-Evil: 1", "s1", _pem(_ED25519)), ["domain", "DNS name"]),
    (("", "s1", _pem(_ED25519)), ["domain"]),
    (("-example.com", "s1", _pem(_ED25519)), ["domain"]),
    ((DOMAIN, "s1 x", _pem(_ED25519)), ["selector", "DNS name"]),
    ((DOMAIN, "s1;h=to", _pem(_ED25519)), ["selector"]),
    ((DOMAIN, None, _pem(_ED25519)), ["selector"]),
])
def test_bad_arguments_are_message_errors(arguments: tuple[object, ...], words: list[str]) -> None:
    with pytest.raises(syncsmtp.MessageError) as caught:
        syncsmtp.DKIM(*arguments)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value)
    assert b"PRIVATE KEY" not in str(caught.value).encode()


@pytest.mark.parametrize(("options", "words"), [
    ({"headers": ["To", "Subject"]}, ["headers", "From"]),
    ({"headers": "From"}, ["headers"]),
    ({"headers": ["From", "Bad Name"]}, ["headers"]),
    ({"headers": ["From", "Received"]}, ["received"]),
    ({"headers": ["From", "DKIM-Signature"]}, ["dkim-signature"]),
    ({"algorithm": "rsa-sha1"}, ["algorithm", "rsa-sha256", "ed25519-sha256"]),
    ({"algorithm": "ed25519-sha256"}, ["algorithm", "does not match", "rsa-sha256"]),
])
def test_bad_options_are_message_errors(options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(syncsmtp.MessageError) as caught:
        signer("rsa", **options)
    for word in words:
        assert word in str(caught.value)


def test_names_and_algorithm_as_signed() -> None:
    made = syncsmtp.DKIM("Bücher.example", "s-2024.eu", _pem(_ED25519).decode(), algorithm="ed25519-sha256")
    assert (made.domain, made.selector, made.algorithm) == ("xn--bcher-kva.example", "s-2024.eu",
                                                            "ed25519-sha256")
    assert made.dns_name == "s-2024.eu._domainkey.xn--bcher-kva.example"
    assert made.dns_record.encode() == txt_record("ed25519")
    assert signer("rsa").dns_record.encode() == txt_record("rsa")
    assert signer("rsa").algorithm == "rsa-sha256"
    assert signer("rsa", headers=("FROM", "to")).headers == ("from", "to")


def test_the_private_key_is_never_shown() -> None:
    secret_line = _pem(_RSA).decode().splitlines()[1]
    made = signer("rsa")
    policy = syncsmtp.Policy(host="127.0.0.1", dkim=made)
    for text in (repr(made), str(made), repr(policy), str(policy)):
        assert secret_line not in text
        assert "private_key='<redacted>'" in text
    assert repr(made) == "DKIM(domain='example.com', selector='s1', private_key='<redacted>', " \
                         "algorithm='rsa-sha256')"
    with pytest.raises(ValueError) as caught:
        syncsmtp.Policy(host="127.0.0.1", dkim=_pem(_RSA))  # type: ignore[arg-type]
    assert "dkim" in str(caught.value) and secret_line not in str(caught.value)


def test_missing_dkimpy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dkim", None)  # import dkim now raises ImportError
    with pytest.raises(syncsmtp.MessageError) as caught:
        signer("rsa")
    assert "dkimpy" in str(caught.value) and "dkim extra" in str(caught.value)
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    with pytest.raises(syncsmtp.MessageError) as caught:
        signer("ed25519")
    assert "dkimpy and PyNaCl" in str(caught.value)


def test_policy_fields() -> None:
    made = signer("ed25519")
    policy = syncsmtp.Policy(host="127.0.0.1", tls="none")
    assert policy.dkim is None
    signed = policy.with_options(dkim=made)
    assert signed.dkim is made and signed != policy
    assert signed.with_options(port=2525).dkim is made
    assert signed.with_options(dkim=None) == policy
    # A dict of DKIM's arguments, as a settings file gives it.
    from_dict = policy.with_options(dkim={"domain": DOMAIN, "selector": "s1", "private_key": _pem(_ED25519)})
    assert from_dict.dkim == made
    with pytest.raises(syncsmtp.MessageError, match="selector"):
        policy.with_options(dkim={"domain": DOMAIN, "selector": "a b", "private_key": _pem(_ED25519)})
    with pytest.raises(ValueError, match="dkim") as caught:
        syncsmtp.Policy(host="h", dkim="s1")  # type: ignore[arg-type]
    assert "'s1'" not in str(caught.value)
    with pytest.raises(ValueError, match="URL") as caught:
        syncsmtp.Policy.from_url("smtp://h?dkim=x")
    assert "with_options(dkim=" in str(caught.value)


# -- through a real Postfix, and through the Django backend ---------------------------------------


@pytest.mark.postfix
@pytest.mark.parametrize("chunking", [True, False], ids=["BDAT", "DATA"])
@pytest.mark.parametrize("kind", KINDS)
def test_postfix_stores_a_copy_that_verifies(fresh_postfix: PostfixInstance, kind: str,
                                             chunking: bool) -> None:
    """Postfix adds Return-Path, Delivered-To and Received above the signature,
    and stores LF line ends: neither touches what was signed."""
    message = make_message(".dot line\nGrüße\n", subject="über dkim")
    message.add_attachment(b"\x00\x01binary\r\n.", maintype="application", subtype="octet-stream",
                           filename="x.bin")
    policy = syncsmtp.Policy(
        host=fresh_postfix.host, port=fresh_postfix.port, ca_file=fresh_postfix.ca_file,
        username=fresh_postfix.username, password=fresh_postfix.password, chunking=chunking,
        dkim=signer(kind),
    )
    syncsmtp.send(message, policy, timeout=30)
    (stored,) = fresh_postfix.wait_for(1)
    head = stored.partition(b"\n\n")[0]
    assert b"\nReceived: " in head and head.index(b"Received: ") < head.index(b"DKIM-Signature: ")
    assert verify(stored, kind)
    assert not verify(stored.replace(b"x.bin", b"y.bin"), kind)


def test_django_setting_signs(smtp_server_factory: ServerFactory) -> None:
    """``SYNCSMTP = {"dkim": {...}}``: DKIM's arguments in the Django settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
    django.setup()
    server = smtp_server_factory(tls="none")
    dkim_setting = {"domain": DOMAIN, "selector": "s1", "private_key": _pem(_ED25519)}
    with override_settings(EMAIL_BACKEND="syncsmtp.django.EmailBackend", EMAIL_HOST=server.host,
                           EMAIL_PORT=server.port, EMAIL_USE_TLS=False, EMAIL_HOST_USER="",
                           EMAIL_HOST_PASSWORD="", SYNCSMTP={"dkim": dkim_setting}):
        sent = mail.send_mail("from django", ".body\n", "ann@example.com", ["bob@example.com"])
        shown = SafeExceptionReporterFilter().get_safe_settings()["SYNCSMTP"]
    assert sent == 1
    (received,) = server.wait_for(1)
    assert verify(received.data, "ed25519")
    # Django's error reports hide it: its name has KEY in it.
    assert shown["dkim"]["private_key"] != dkim_setting["private_key"]
    assert shown["dkim"]["selector"] == "s1"


def test_flask_setting_signs(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    app = flask.Flask("dkim")
    app.config.update(MAIL_SERVER=server.host, MAIL_PORT=server.port, MAIL_DEFAULT_SENDER="ann@example.com",
                      SYNCSMTP={"dkim": {"domain": DOMAIN, "selector": "s1", "private_key": _pem(_RSA)}})
    extension = syncsmtp.flask.Mail(app)
    with app.app_context():
        extension.send(syncsmtp.flask.Message("from flask", recipients=["bob@example.com"], body=".x\n"))
    (received,) = server.wait_for(1)
    assert verify(received.data, "rsa")


def test_signed_in_the_callers_thread_and_counted_in_size(smtp_server_factory: ServerFactory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp_server_factory(tls="none", extensions=("8BITMIME", "SIZE 1000000"))
    threads: list[threading.Thread] = []
    sign = syncsmtp.DKIM.sign

    def recording_sign(self: syncsmtp.DKIM, message: bytes) -> bytes:
        threads.append(threading.current_thread())
        return sign(self, message)

    monkeypatch.setattr(syncsmtp.DKIM, "sign", recording_sign)
    syncsmtp.send(make_message(), server.policy(dkim=signer("ed25519")), timeout=30)
    assert threads == [threading.current_thread()]
    (received,) = server.wait_for(1)
    assert f"SIZE={len(received.data)}" in received.mail_options
    assert verify(received.data, "ed25519")


def test_sign_alone() -> None:
    """DKIM.sign() for a message sent some other way: the header to put first."""
    data = b"Received: by relay\r\nFrom: ann@example.com\r\nSubject: alone\r\n\r\nbody\r\n"
    header = signer("rsa").sign(data)
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert verify(header + data, "rsa")
    assert signature_of_header(header)[b"h"] == b"from:subject:from"
    lf_data = data.replace(b"\r\n", b"\n")
    assert verify(signer("ed25519").sign(lf_data) + lf_data, "ed25519")
    with pytest.raises(syncsmtp.MessageError, match="no From header"):
        signer("rsa").sign(b"Subject: x\r\nX-From: ann@example.com\r\n\r\nFrom: ann@example.com\r\n")
