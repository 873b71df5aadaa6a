"""TLS client options from a Policy (reactor side).

Verification is the default: the chain must lead to the trust roots (the
system's, or ``ca_file``), and the leaf certificate must be for the policy's
host name or IP address. The name check is this module's own, in OpenSSL's
verify callback, and fails closed: any exception or doubt while reading the
certificate's names fails the handshake, so nothing (EHLO, AUTH, data) is ever
written to a server whose name did not verify. (Twisted's stock callback
treats only a name *mismatch* as a failure; a certificate whose names cannot
be parsed would pass for any host.)

TLS 1.2 is the minimum; its suites are limited to forward-secret AEAD ones
unless ``Policy.tls_ciphers`` widens them. ``verify=False`` still encrypts.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import CertificateError, TLSFailedError
from .policy import Policy

__all__ = ["DEFAULT_TLS12_CIPHERS", "client_tls_options"]

#: The TLS 1.2 suites offered by default: ECDHE key exchange (forward
#: secrecy) with AES-GCM or ChaCha20-Poly1305. TLS 1.3 suites all qualify and
#: are not affected.
DEFAULT_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)
# An encrypted PEM key: PKCS #8, or a traditional one with its Proc-Type header.
_ENCRYPTED_KEY = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: *4, *ENCRYPTED", re.MULTILINE
)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _trust_root(policy: Policy) -> Any:
    if policy.ca_file is None:
        return ssl.platformTrust()
    blocks = _PEM_CERTIFICATE.findall(_read(policy.ca_file))
    if not blocks:
        raise TLSFailedError(
            f"ca_file {policy.ca_file!r} holds no PEM certificate", host=policy.host, stage="tls"
        )
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(block) for block in blocks])


def _load_client_certificate(context: SSL.Context, policy: Policy) -> None:
    """The policy's client certificate (with any chain after it) and its key, read by
    OpenSSL from their PEM files (``client_key`` None: the key is in ``client_cert``).
    No pyOpenSSL certificate or key objects: handing those to OpenSSL is deprecated."""
    if policy.client_cert is None:
        return
    key_file = policy.client_key or policy.client_cert
    if _ENCRYPTED_KEY.search(_read(key_file)):
        # OpenSSL would ask for its passphrase on the terminal, from the reactor thread.
        raise TLSFailedError(
            f"the client key in {key_file!r} is encrypted; give client_key an unencrypted PEM key",
            host=policy.host,
            stage="tls",
        )
    context.use_certificate_chain_file(policy.client_cert)
    context.use_privatekey_file(key_file)
    context.check_privatekey()


def _is_ip(hostname: str) -> bool:
    return bool(isIPAddress(hostname) or isIPv6Address(hostname))


def _context(policy: Policy) -> SSL.Context:
    options: dict[str, Any] = {
        "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
        "acceptableCiphers": ssl.AcceptableCiphers.fromOpenSSLCipherString(
            policy.tls_ciphers or DEFAULT_TLS12_CIPHERS
        ),
    }
    if policy.verify:
        options["trustRoot"] = _trust_root(policy)
    else:
        options["verify"] = False
    context: SSL.Context = ssl.CertificateOptions(**options).getContext()
    _load_client_certificate(context, policy)
    return context


def _name_check(hostname: str) -> Callable[[Any], None]:
    if _is_ip(hostname):
        return lambda certificate: verify_certificate_ip_address(certificate, hostname)
    return lambda certificate: verify_certificate_hostname(certificate, hostname)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientTLS:
    """Makes the OpenSSL connection of each TLS session (one per STARTTLS or
    implicit-TLS connection), with SNI and, unless ``verify=False``, this
    module's host-name check on the leaf certificate."""

    def __init__(self, policy: Policy) -> None:
        self._context = _context(policy)
        self._verify = policy.verify
        self._host = policy.host
        self._address = policy.address
        self._server_name = None if _is_ip(policy.host) else policy.host.encode("idna")
        # SHA-256 digests of leaf certificates whose names were found valid for
        # the host: reading a certificate's names in Python took about 1 ms of
        # the reactor's time in each fresh STARTTLS send, for the same
        # certificate every time.
        self._names_checked: dict[bytes, None] = {}
        # TLS sessions of earlier connections to this server, each offered
        # once for resumption (RFC 8446 section 4.6.1: a ticket is not reused).
        self._sessions: deque[SSL.Session] = deque(maxlen=_SESSIONS_KEPT)
        if self._verify:
            # On the context (this creator's own, so this host's check only),
            # once: set on each connection, pyOpenSSL's callback wrapper
            # would sit in a reference cycle with it, and cost a C callback
            # of its own each time.
            self._context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._leaf_check())

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self._server_name:
            connection.set_tlsext_host_name(self._server_name)
        if self._sessions:
            connection.set_session(self._sessions.pop())
        connection.set_connect_state()
        return connection

    def keep_session(self, connection: SSL.Connection) -> None:
        """Keep the session of ``connection`` (set up, and past the server's
        first reply, by which time TLS 1.3 session tickets have come) for a
        later connection to resume: no certificate sent, checked or signed
        again. Sessions are kept per policy, so only for the same server
        name, trust roots and client certificate."""
        session = connection.get_session()
        if session is not None:
            self._sessions.append(session)

    def _leaf_check(self) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
        check = _name_check(self._host)
        host, address, checked = self._host, self._address, self._names_checked

        def verify(connection: SSL.Connection, certificate: crypto.X509, _errno: int,
                   depth: int, chain_ok: int) -> bool:
            # OpenSSL calls this for each certificate, the leaf (depth 0) last;
            # a broken chain fails on its own.
            if depth != 0 or not chain_ok:
                return bool(chain_ok)
            try:
                # The chain was verified just now; only the name check is
                # skipped for a certificate (the same bytes) already checked.
                digest = certificate.digest("sha256")
                if digest in checked:
                    return True
                check(certificate.to_cryptography())
                if len(checked) >= _NAMES_CHECKED_SIZE:
                    checked.clear()
                checked[digest] = None
            except BaseException as exc:
                reason = CertificateError(
                    f"the certificate of {address} is not valid for the name {host!r} "
                    f"({type(exc).__name__}: {exc}); check that the policy's host is a name "
                    "the certificate is issued for (its subjectAltName entries)",
                    host=host,
                    stage="tls",
                )
                connection.get_app_data().failVerification(Failure(reason))
                return False
            return True

        return verify


#: How many TLS sessions one policy keeps for resumption (one per
#: connection that may open at once is enough).
_SESSIONS_KEPT = 16
#: How many leaf certificates one policy remembers as valid for its host
#: (a server may rotate between a few; all are forgotten beyond this).
_NAMES_CHECKED_SIZE = 16

# Building a context (trust roots, key, suites) took about 1.2 ms of the
# reactor's time per send; a context serves any number of connections.
_CACHE_SIZE = 32
_cache: dict[tuple[Policy, tuple[float | None, ...]], _ClientTLS] = {}


def _file_times(policy: Policy) -> tuple[float | None, ...]:
    """When the policy's PEM files last changed: a new version makes a new context."""
    times: list[float | None] = []
    for path in (policy.ca_file, policy.client_cert, policy.client_key):
        try:
            times.append(os.stat(path).st_mtime if path else None)
        except OSError:
            times.append(None)
    return tuple(times)


def client_tls_options(policy: Policy) -> Any:
    """An ``IOpenSSLClientConnectionCreator`` for the policy's server (one per
    policy and version of its files, kept for later sends; reactor thread only)."""
    key = (policy, _file_times(policy))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    creator = _new_client_tls(policy)
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = creator
    return creator


def _new_client_tls(policy: Policy) -> _ClientTLS:
    try:
        return _ClientTLS(policy)
    except TLSFailedError:
        raise
    except Exception as exc:
        raise TLSFailedError(
            f"cannot set up TLS for {policy.address}: {exc}; check ca_file, client_cert, "
            "client_key (PEM files) and tls_ciphers",
            host=policy.host,
            stage="tls",
        ) from exc
