"""A TLS SMTP server on loopback with a certificate made for one test (Python's
``ssl`` and threads, not Twisted: independent of the client under test).

It records every line it receives after the TLS handshake, so a test can
assert that a client which refused the certificate wrote nothing over it.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from loopback import serving

_DEADLINE = 10.0


@dataclass(frozen=True)
class CertificateShape:
    """The names in a leaf certificate: its subject CN and subjectAltName entries
    (``"dns:..."`` or ``"ip:..."``; none means no subjectAltName extension)."""

    common_name: str
    alt_names: tuple[str, ...] = ()


class PrivateCA:
    """A CA in a temporary folder, and leaf certificates it signs on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncsmtp tls_peer CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._name = name
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = str(folder / "ca.pem")
        Path(self.ca_file).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def leaf(self, shape: CertificateShape, label: str, *, rsa_key: bool = False) -> tuple[str, str]:
        """Files (certificate, key) of a leaf certificate with ``shape``'s names
        (an RSA key for suites with RSA key exchange, else EC)."""
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
            else ec.generate_private_key(ec.SECP256R1())
        )
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, shape.common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )
        if shape.alt_names:
            names: list[x509.GeneralName] = []
            for entry in shape.alt_names:
                kind, _, value = entry.partition(":")
                if kind == "ip":
                    names.append(x509.IPAddress(ipaddress.ip_address(value)))
                else:
                    names.append(x509.DNSName(value))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{label}.pem", self.folder / f"{label}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return str(cert_file), str(key_file)


@contextmanager
def private_ca() -> Iterator[PrivateCA]:
    with tempfile.TemporaryDirectory(prefix="syncsmtp-tls-peer-") as folder:
        yield PrivateCA(Path(folder))


@dataclass
class TLSPeer:
    """What the server saw: lines after TLS, and whether a handshake finished."""

    port: int
    after_tls: list[bytes] = field(default_factory=list)
    handshakes: int = 0
    handshake_errors: list[str] = field(default_factory=list)


def _context(cert_file: str, key_file: str, ciphers: str | None, tls12_only: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def _read_line(stream: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\r\n" not in buffer:
        chunk = stream.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def _serve_one(connection: socket.socket, mode: str, context: ssl.SSLContext, peer: TLSPeer) -> None:
    connection.settimeout(_DEADLINE)
    stream: socket.socket = connection
    buffer = bytearray()
    secure = False
    if mode == "implicit":
        try:
            stream = context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as error:
            peer.handshake_errors.append(str(error))
            return
        peer.handshakes += 1
        secure = True
    stream.sendall(b"220 tls-peer ESMTP\r\n")
    for _ in range(50):  # bounded: a client sends a handful of commands
        line = _read_line(stream, buffer)
        if line is None:
            return
        if secure:
            peer.after_tls.append(line)
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            extensions = [b"AUTH PLAIN LOGIN"] if secure else [b"STARTTLS"]
            stream.sendall(b"250-tls-peer\r\n" + b"".join(b"250-" + e + b"\r\n" for e in extensions)
                           + b"250 8BITMIME\r\n")
        elif verb == b"STARTTLS" and not secure:
            stream.sendall(b"220 go ahead\r\n")
            try:
                stream = context.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError) as error:
                peer.handshake_errors.append(str(error))
                return
            peer.handshakes += 1
            buffer.clear()
            secure = True
        elif verb == b"AUTH":
            stream.sendall(b"235 2.7.0 ok\r\n")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            stream.sendall(b"250 ok\r\n")
        elif verb == b"DATA":
            stream.sendall(b"354 go\r\n")
            while True:
                data_line = _read_line(stream, buffer)
                if data_line is None:
                    return
                if data_line == b".":
                    break
            stream.sendall(b"250 queued\r\n")
        elif verb == b"QUIT":
            stream.sendall(b"221 bye\r\n")
            return
        else:
            stream.sendall(b"500 what\r\n")


@contextmanager
def tls_peer(
    cert_file: str, key_file: str, mode: str = "starttls", *, ciphers: str | None = None,
    tls12_only: bool = False, connections: int = 4,
) -> Iterator[TLSPeer]:
    """Serve up to ``connections`` SMTP sessions on 127.0.0.1 with this certificate."""
    context = _context(cert_file, key_file, ciphers, tls12_only)
    peer = TLSPeer(port=0)
    with serving(lambda connection: _serve_one(connection, mode, context, peer), connections,
                 (OSError, ssl.SSLError)) as port:
        peer.port = port
        yield peer


def shapes_for_localhost() -> Sequence[tuple[str, CertificateShape]]:
    """Certificates that chain to the CA but must not pass for host ``localhost``."""
    return (
        ("cn-only", CertificateShape("evil.example")),
        ("star-only", CertificateShape("x", ("dns:*",))),
        ("short-wildcard", CertificateShape("x", ("dns:evil.example", "dns:*.example"))),
        ("star-dot-test", CertificateShape("x", ("dns:*.test",))),
        ("inner-wildcard", CertificateShape("x", ("dns:mail.*.test",))),
        ("ip-as-dns-10", CertificateShape("x", ("dns:10.0.0.1",))),
        ("ip-as-dns-127", CertificateShape("x", ("dns:127.0.0.1",))),
        ("cn-localhost-no-san", CertificateShape("localhost")),
        ("other-name", CertificateShape("x", ("dns:mail.example.com",))),
    )
