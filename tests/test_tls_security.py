"""TLS as an attacker would try it: certificates that chain to a trusted CA but
are not for the host, suites without forward secrecy, and ``verify=False``.

The servers are :mod:`tls_peer` (Python's ``ssl`` on 127.0.0.1, a certificate
made for each case), which records every line written to it over TLS.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from tls_peer import CertificateShape, PrivateCA, private_ca, shapes_for_localhost, tls_peer

import syncsmtp

PASSWORD = "tls-Secret-9931"


@pytest.fixture(scope="module")
def ca() -> Iterator[PrivateCA]:
    with private_ca() as authority:
        yield authority


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "tls"
    msg.set_content("body")
    return msg


def policy(ca: PrivateCA, port: int, mode: str, **changes: object) -> syncsmtp.Policy:
    return syncsmtp.Policy(host="localhost", port=port, tls=mode,  # type: ignore[arg-type]
                           ca_file=ca.ca_file, username="me", password=PASSWORD).with_options(**changes)


MODES = ("starttls", "implicit")
SHAPES = shapes_for_localhost()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("label", "shape"), SHAPES, ids=[label for label, _ in SHAPES])
def test_certificate_not_for_the_host_is_refused_before_any_command(
    ca: PrivateCA, label: str, shape: CertificateShape, mode: str
) -> None:
    cert, key = ca.leaf(shape, f"{label}-{mode}")
    with tls_peer(cert, key, mode) as peer, pytest.raises(syncsmtp.CertificateError) as caught:
        syncsmtp.send(message(), policy(ca, peer.port, mode), timeout=10)
    assert peer.after_tls == []  # no EHLO, AUTH or MAIL over the unverified connection
    assert "localhost" in str(caught.value)
    assert PASSWORD not in str(caught.value) + repr(caught.value) + "".join(caught.value.transcript)


@pytest.mark.parametrize("mode", MODES)
def test_certificate_for_the_host_is_accepted(ca: PrivateCA, mode: str) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("dns:localhost",)), f"good-{mode}")
    with tls_peer(cert, key, mode) as peer:
        result = syncsmtp.send(message(), policy(ca, peer.port, mode), timeout=10)
    assert result.reply is not None and result.reply.code == 250
    assert peer.after_tls[0].startswith(b"EHLO")
    assert result.tls is not None and result.tls.version in ("TLSv1.2", "TLSv1.3")


def test_ip_address_host_needs_an_ip_address_entry(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("ip:127.0.0.1",)), "ip-entry")
    with tls_peer(cert, key, "implicit", connections=2) as peer:
        good = policy(ca, peer.port, "implicit").with_options(host="127.0.0.1")
        assert syncsmtp.send(message(), good, timeout=10).accepted == ("b@example.com",)
        with pytest.raises(syncsmtp.CertificateError):
            syncsmtp.send(message(), policy(ca, peer.port, "implicit"), timeout=10)


def test_mailer_refuses_the_certificate_too(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("dns:*",)), "mailer")
    with tls_peer(cert, key, "starttls") as peer:
        mailer = syncsmtp.Mailer(policy(ca, peer.port, "starttls"))
        with mailer, pytest.raises(syncsmtp.CertificateError):
            mailer.send(message(), timeout=10)
    assert peer.after_tls == []


def test_cli_check_says_the_certificate_does_not_verify(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("evil.example"), "cli-check")
    with tls_peer(cert, key, "starttls") as peer:
        done = subprocess.run(
            [sys.executable, "-m", "syncsmtp", "check", "--host", "localhost", "--port",
             str(peer.port), "--tls", "starttls", "--ca-file", ca.ca_file],
            input="", capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "verifies yes" not in done.stdout and "NO" in done.stdout
    # Only the second, unverified session that shows the certificate spoke over TLS, without AUTH.
    assert not any(line.startswith(b"AUTH") for line in peer.after_tls)


# -- suites ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["AES128-SHA", "AES256-SHA256", "ECDHE-RSA-AES128-SHA"])
def test_tls12_suites_without_forward_secrecy_or_aead_are_refused(ca: PrivateCA, suite: str) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("dns:localhost",)), f"rsa-{suite}", rsa_key=True)
    refusing = tls_peer(cert, key, "implicit", ciphers=suite, tls12_only=True)
    with refusing as peer, pytest.raises(syncsmtp.TLSFailedError):
        syncsmtp.send(message(), policy(ca, peer.port, "implicit"), timeout=10)
    assert peer.after_tls == []


def test_tls_ciphers_widens_the_list_for_a_legacy_relay(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("dns:localhost",)), "rsa-legacy", rsa_key=True)
    with tls_peer(cert, key, "implicit", ciphers="AES128-SHA", tls12_only=True) as peer:
        legacy = policy(ca, peer.port, "implicit", tls_ciphers="AES128-SHA")
        result = syncsmtp.send(message(), legacy, timeout=10)
    assert result.tls is not None and result.tls.cipher == "AES128-SHA"


def test_tls12_with_ecdhe_and_aead_is_accepted(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("x", ("dns:localhost",)), "rsa-modern", rsa_key=True)
    with tls_peer(cert, key, "implicit", tls12_only=True) as peer:
        result = syncsmtp.send(message(), policy(ca, peer.port, "implicit"), timeout=10)
    assert result.tls is not None and result.tls.version == "TLSv1.2"
    assert "ECDHE" in result.tls.cipher and ("GCM" in result.tls.cipher or "CHACHA" in result.tls.cipher)


def test_tls_ciphers_is_checked() -> None:
    with pytest.raises(ValueError, match="tls_ciphers"):
        syncsmtp.Policy(host="localhost", tls_ciphers="DEFAULT\r\nX")


# -- verify=False ------------------------------------------------------------------------------------


def test_verify_false_warns_once_per_policy() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        insecure = syncsmtp.Policy(host="localhost", verify=False)
        syncsmtp.Policy(host="localhost")
        syncsmtp.Policy(host="localhost", tls="none", verify=False)  # nothing to verify
    assert [w.category for w in seen] == [syncsmtp.InsecureTLSWarning]
    assert "verify=False" in str(seen[0].message) and seen[0].filename == __file__
    assert insecure.verify is False


def test_cli_insecure_says_so_on_stderr(ca: PrivateCA) -> None:
    cert, key = ca.leaf(CertificateShape("evil.example"), "cli-insecure")
    with tls_peer(cert, key, "starttls") as peer:
        done = subprocess.run(
            [sys.executable, "-m", "syncsmtp", "check", "--host", "localhost", "--port",
             str(peer.port), "--tls", "starttls", "--insecure"],
            input="", capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--insecure" in done.stderr and "not verified" in done.stderr
    assert done.stderr.count("\n") <= 3


def test_a_changed_ca_file_is_read_again(ca: PrivateCA) -> None:
    """TLS contexts are kept per policy, but a new version of its files makes a new one."""
    import os
    import shutil

    cert, key = ca.leaf(CertificateShape("x", ("dns:localhost",)), "cache")
    with private_ca() as other:
        trusted = os.path.join(other.folder, "trusted.pem")
        shutil.copy(ca.ca_file, trusted)
        with tls_peer(cert, key, "implicit") as peer:
            changing = policy(ca, peer.port, "implicit", ca_file=trusted)
            syncsmtp.send(message(), changing, timeout=10)
            shutil.copy(other.ca_file, trusted)  # now trusts another CA only
            os.utime(trusted, (1, 1))  # a different modification time, whatever the clock
            with pytest.raises(syncsmtp.CertificateError):
                syncsmtp.send(message(), changing, timeout=10)


def test_a_certificate_s_names_are_read_once_and_a_refusal_never_remembered(
    ca: PrivateCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each handshake verifies the chain; the name check of a leaf already found
    valid for the host is remembered by its digest, a failed one never is."""
    from OpenSSL import crypto

    from syncsmtp import _tls

    checked: list[str] = []
    original = _tls.verify_certificate_hostname

    def counting(certificate: object, hostname: str) -> None:
        checked.append(hostname)
        original(certificate, hostname)  # type: ignore[arg-type]

    monkeypatch.setattr(_tls, "verify_certificate_hostname", counting)

    def leaf(shape: CertificateShape, name: str) -> crypto.X509:
        cert_file, _ = ca.leaf(shape, name)
        with open(cert_file, "rb") as handle:
            return crypto.load_certificate(crypto.FILETYPE_PEM, handle.read())

    class Handshake:
        refused = 0

        def failVerification(self, reason: object) -> None:
            self.refused += 1

    class Connection:  # the callback finds the handshake as the connection's app data
        def get_app_data(self) -> Handshake:
            return handshake

    good = leaf(CertificateShape("x", ("dns:localhost",)), "remembered-good")
    evil = leaf(CertificateShape("evil.example"), "remembered-evil")
    handshake, connection = Handshake(), Connection()
    verify = _tls._ClientTLS(policy(ca, 25, "starttls"))._leaf_check()
    assert verify(connection, good, 0, 0, 1) and verify(connection, good, 0, 0, 1)  # type: ignore[arg-type]
    assert checked == ["localhost"]
    assert not verify(connection, evil, 0, 0, 1)  # type: ignore[arg-type]
    assert not verify(connection, evil, 0, 0, 1)  # type: ignore[arg-type]
    assert checked == ["localhost"] * 3 and handshake.refused == 2
    # A broken chain, whatever was remembered:
    assert not verify(connection, good, 0, 0, 0)  # type: ignore[arg-type]
