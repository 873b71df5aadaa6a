"""The test server's side of TLS: one OpenSSL context, a connection from it for each handshake.

The context loads the certificate and key from their PEM files and, when
client certificates are required, trusts the test CA's file for them: no
pyOpenSSL certificate or key objects are handed to OpenSSL (pyOpenSSL
deprecates that), so a test run that turns DeprecationWarning into errors
runs STARTTLS and implicit TLS unchanged, on every pyOpenSSL syncsmtp allows.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from ._certs import TestCertificates

__all__ = ["ServerTLS", "client_certificate_name"]


def _chain_verified(_connection: Any, _certificate: Any, _errno: int, _depth: int, ok: int) -> bool:
    """OpenSSL's own verdict on the client's chain (against the test CA) stands."""
    return bool(ok)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Makes the server end of each TLS session (after STARTTLS, or from the first
    byte), with TLS 1.2 at least, and with ``require_client_certificate`` a client
    certificate that the test CA signed."""

    def __init__(self, certificates: TestCertificates, *, require_client_certificate: bool) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        # No compression (CRIME), no session tickets or cache: each handshake is a full one.
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET | SSL.OP_CIPHER_SERVER_PREFERENCE)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.use_certificate_chain_file(certificates.server_cert_file)
        context.use_privatekey_file(certificates.server_key_file)
        context.check_privatekey()
        if require_client_certificate:
            context.load_verify_locations(certificates.ca_file)
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _chain_verified)
        self._context = context

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        """A connection for one handshake (Twisted sets its accept state)."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        return connection


def client_certificate_name(transport: Any) -> str | None:
    """The common name of the certificate the client presented on this TLS
    transport, if it presented one."""
    get_peer_certificate = getattr(transport, "getPeerCertificate", None)
    certificate = get_peer_certificate() if get_peer_certificate is not None else None
    if certificate is None:
        return None
    from cryptography.x509.oid import NameOID

    names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
