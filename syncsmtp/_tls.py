"""TLS client options from a Policy (reactor side).

Verification is the default and goes through Twisted's
``optionsForClientTLS``: chain to the trust roots (the system's, or
``ca_file``) and host name or IP address checked by service-identity. Only
``verify=False`` builds a non-verifying connection, and it still encrypts.
"""

from __future__ import annotations

import re
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from .errors import TLSFailedError
from .policy import Policy

__all__ = ["client_tls_options"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
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


def _client_certificate(policy: Policy) -> Any:
    if policy.client_cert is None:
        return None
    pem = _read(policy.client_cert)
    if policy.client_key is not None:
        pem = pem + b"\n" + _read(policy.client_key)
    return ssl.PrivateCertificate.loadPEM(pem)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """Encrypts without checking who is at the other end (``verify=False`` only)."""

    def __init__(self, hostname: str, client_certificate: Any) -> None:
        if client_certificate is None:
            options = ssl.CertificateOptions(verify=False)
        else:
            options = ssl.CertificateOptions(
                privateKey=client_certificate.privateKey.original,
                certificate=client_certificate.original,
                verify=False,
            )
        self._context = options.getContext()
        self._hostname = hostname.encode("idna") if not _is_ip(hostname) else None

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self._hostname:
            connection.set_tlsext_host_name(self._hostname)
        connection.set_connect_state()
        return connection


def _is_ip(hostname: str) -> bool:
    from twisted.internet.abstract import isIPAddress, isIPv6Address

    return bool(isIPAddress(hostname) or isIPv6Address(hostname))


def client_tls_options(policy: Policy) -> Any:
    """An ``IOpenSSLClientConnectionCreator`` for the policy's server."""
    try:
        certificate = _client_certificate(policy)
        if not policy.verify:
            return _UnverifiedClientTLS(policy.host, certificate)
        return ssl.optionsForClientTLS(
            policy.host, trustRoot=_trust_root(policy), clientCertificate=certificate
        )
    except TLSFailedError:
        raise
    except Exception as exc:
        raise TLSFailedError(
            f"cannot set up TLS for {policy.address}: {exc}; check ca_file, client_cert "
            "and client_key (PEM files)",
            host=policy.host,
            stage="tls",
        ) from exc
