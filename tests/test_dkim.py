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
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import syncsmtp
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
KEYS = {"rsa": _RSA, "ed25519": _ED25519, "other-rsa": _OTHER_RSA}


def txt_record(kind: str) -> bytes:
    """The TXT record of the key, built here from the key (not by syncsmtp)."""
    public = KEYS[kind].public_key()
    if kind.endswith("rsa"):
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=" + kind.rpartition("-")[2].encode() + b"; p=" + base64.b64encode(raw)


def signer(kind: str, selector: str = "s1", **options: object) -> syncsmtp.DKIM:
    return syncsmtp.DKIM(DOMAIN, selector, _pem(KEYS[kind]), **options)  # type: ignore[arg-type]


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
    parsed = email.message_from_bytes(received.data, policy=email.policy.compat32)
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
