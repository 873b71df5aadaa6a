"""Session set-up, the TLS steps: STARTTLS when offered or required, and what
the handshake left (ESMTPClient's ``tryTLS`` and ``esmtpState_starttls``)."""

from __future__ import annotations

from OpenSSL import SSL

from .. import _twisted
from ..result import Reply, TLSInfo
from . import failures
from .base import SessionBase
from .capabilities import Capabilities

__all__ = ["TLSSteps"]


class TLSSteps(SessionBase):
    """STARTTLS, refusing data injected before the handshake (CVE-2011-0411)."""

    #: The EHLO keywords before STARTTLS; None when STARTTLS was not used.
    plaintext_capabilities: Capabilities | None = None

    def tryTLS(self, code: int, resp: bytes, items: Capabilities) -> None:  # noqa: N802
        if _twisted.tls_started(self) or self.policy.tls == "none":
            self.authenticate(code, resp, items)
        elif b"STARTTLS" in items:
            self._stage("starttls")
            _twisted.expect(self, [220], self.esmtpState_starttls, self._starttls_refused)
            self.sendLine(b"STARTTLS")
        elif self.policy.tls == "starttls":
            self.esmtpTLSRequired()
        else:
            self.authenticate(code, resp, items)

    def authenticate(self, code: int, resp: bytes, items: Capabilities) -> None:
        raise NotImplementedError  # AuthSteps

    def _starttls_refused(self, code: int, resp: bytes) -> None:
        if self.policy.tls == "opportunistic":
            # RFC 3207 lets the session go on in plaintext; "opportunistic" asks for that.
            self.authenticate(code, resp, self.capabilities)
            return
        self._fail(failures.starttls_refused(self.policy.address, Reply.parse(code, resp)))

    def esmtpTLSRequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(failures.tls_required(self.policy.address))

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:  # noqa: N802
        if _twisted.unread(self):
            # Bytes that came with the 220 were sent before TLS: never read them after it.
            _twisted.discard_unread(self)
            self._fail(failures.starttls_injection(self.policy.address), fatal=True)
            return
        self._stage("starttls")
        self.flush_held()  # nothing written before STARTTLS may leave encrypted
        try:
            _twisted.start_client_tls(self.transport, self.context)
        except Exception as exc:
            self._fail(failures.tls_not_started(self.policy.address, exc), fatal=True)
            return
        _twisted.mark_tls_started(self)
        self._stop_tls_writes = _twisted.tls_writes_at_once(self.transport)
        self._stop_quick_acks = _twisted.acknowledge_reads_at_once(self.transport)
        self.plaintext_capabilities, self.capabilities = self.capabilities, {}
        self.esmtpState_ehlo(code, resp)
        # EHLO waits in the TLS layer until the handshake is done; until then, a
        # stall is the handshake's (handshakeCompleted moves the stage on).
        self._stage("starttls")

    def esmtpTLSFailed(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(failures.tls_failed(self.policy.address), fatal=True)

    def handshakeCompleted(self) -> None:  # noqa: N802
        if self.stage == "starttls":
            self._stage("ehlo")
        handle = self.transport.getHandle()
        try:
            self.tls = TLSInfo(handle.get_protocol_version_name(), handle.get_cipher_name() or "unknown")
        except (AttributeError, SSL.Error):
            self.tls = TLSInfo("unknown", "unknown")
