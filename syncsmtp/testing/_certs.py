"""A throwaway CA and server certificate for the test server (no Twisted here).

EC keys, because RSA key generation would cost a test run seconds; made once
per process and cached.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestCertificates", "certificates"]


@dataclass(frozen=True)
class TestCertificates:
    """PEM bytes of the CA and of a server certificate it signed, the files of
    both (the server's TLS context loads its certificate and key from files),
    and the files of a client certificate (CN ``syncsmtp test client``) it signed."""

    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    ca_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str


_lock = threading.Lock()
_cache: dict[str, TestCertificates] = {}
_folder: Path | None = None


def _new_folder() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="syncsmtp-test-ca-"))
        atexit.register(_remove, _folder, os.getpid())
    return _folder


def _remove(folder: Path, owner: int) -> None:
    # A forked child runs its parent's atexit hooks too; the files are the parent's.
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def certificates(hostname: str = "localhost") -> TestCertificates:
    """The certificates for ``hostname`` (also valid for localhost, 127.0.0.1 and ::1)."""
    with _lock:
        if hostname not in _cache:
            _cache[hostname] = _generate(hostname)
        return _cache[hostname]


def _generate(hostname: str) -> TestCertificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid_from, valid_to = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncsmtp test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncsmtp test client")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    folder = _new_folder()
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_file = folder / f"ca-{hostname}.pem"
    ca_file.write_bytes(ca_pem)
    server_cert_pem = server_cert.public_bytes(serialization.Encoding.PEM)
    server_cert_file = folder / f"server-{hostname}.pem"
    server_cert_file.write_bytes(server_cert_pem)
    server_key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    server_key_file = folder / f"server-{hostname}.key"
    server_key_file.write_bytes(server_key_pem)
    client_cert_file = folder / f"client-{hostname}.pem"
    client_cert_file.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    client_key_file = folder / f"client-{hostname}.key"
    client_key_file.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TestCertificates(
        ca_pem=ca_pem,
        server_cert_pem=server_cert_pem,
        server_key_pem=server_key_pem,
        ca_file=str(ca_file),
        server_cert_file=str(server_cert_file),
        server_key_file=str(server_key_file),
        client_cert_file=str(client_cert_file),
        client_key_file=str(client_key_file),
    )
