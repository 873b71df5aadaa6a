"""Probing a server without sending (reactor side): the engine of
:func:`syncsmtp.check` and so of ``syncsmtp check``.

A probe opens an ordinary session (:func:`syncsmtp._engine.open_session`, so
greeting, EHLO, STARTTLS and AUTH run exactly as in a send), records what the
server announced at each step and the certificate it presented, and QUITs
once the session is ready, before any MAIL. When the certificate does not
verify, a second session without verification, and without credentials,
still shows what the certificate is.

What it hands back is plain data (:class:`~syncsmtp.CheckResult`): no
Twisted or OpenSSL object reaches the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from ._engine import Progress, SMTPClientProtocol, connect_timeout, open_session
from .errors import AuthError, CertificateError, SMTPError
from .policy import Policy, unverified_copy
from .result import Capabilities, CertificateInfo, CheckResult, Reply, TLSInfo

__all__ = ["probe"]


def _capabilities(items: Mapping[bytes, bytes | None]) -> Capabilities:
    """The engine's raw keyword map as plain data."""
    return Capabilities({
        key.decode("ascii", "replace"): None if value is None else value.decode("utf-8", "replace")
        for key, value in items.items()
    })


def _certificate_info(session: SMTPClientProtocol) -> CertificateInfo | None:
    """The peer certificate of the session's TLS connection, if it has one."""
    transport = session.transport
    if transport is None or session.tls is None:
        return None
    try:
        peer = transport.getHandle().get_peer_certificate()
    except Exception:  # a transport without an OpenSSL handle: nothing to show
        return None
    if peer is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = peer.to_cryptography()
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        alt_names = tuple(
            [f"DNS:{name}" for name in extension.value.get_values_for_type(x509.DNSName)]
            + [f"IP:{address}" for address in extension.value.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        alt_names = ()
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        alt_names=alt_names,
        serial=f"{certificate.serial_number:X}",
        sha256=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


@dataclass
class _Observation:
    """What one session showed, filled in as it goes."""

    greeting: Reply | None = None
    before_tls: Capabilities | None = None
    after_tls: Capabilities | None = None
    tls: TLSInfo | None = None
    certificate: CertificateInfo | None = None
    auth_mechanism: str | None = None
    error: SMTPError | None = None
    transcript: tuple[str, ...] = ()

    def take(self, session: SMTPClientProtocol) -> None:
        """Copy what the session knows now (its connection may still be open)."""
        self.greeting = session.greeting or self.greeting
        capabilities = session.capabilities
        plaintext = session.plaintext_capabilities
        if session.tls is not None:
            self.tls = session.tls
            self.certificate = _certificate_info(session) or self.certificate
            if plaintext is not None:
                self.before_tls = _capabilities(plaintext)
            if capabilities:
                self.after_tls = _capabilities(capabilities)
        elif plaintext is not None:
            # STARTTLS was sent, but the handshake did not complete.
            self.before_tls = _capabilities(plaintext)
        elif capabilities:
            self.before_tls = _capabilities(capabilities)
        self.auth_mechanism = session.authenticated_with
        self.transcript = session.transcript()


class _Attempt:
    """One session of a probe: connect, set up as the policy says, QUIT."""

    def __init__(self, reactor: Any, policy: Policy, timeout: float) -> None:
        self._reactor = reactor
        self._policy = policy
        self._timeout = timeout
        self._session: SMTPClientProtocol | None = None
        self._connection: Any = None
        self.observation = _Observation()
        self.done: defer.Deferred[_Observation] = defer.Deferred()

    def start(self) -> defer.Deferred[_Observation]:
        try:
            self._session, self._connection = open_session(
                self._reactor, self._policy, Progress(), self._timeout
            )
        except SMTPError as error:
            self.observation.error = error
            self.done.callback(self.observation)
            return self.done
        self._session.ready.addCallbacks(self._ready, self._failed)
        return self.done

    def _ready(self, _: None) -> None:
        session = self._session
        assert session is not None
        self.observation.take(session)
        session.quit().addBoth(self._finish)

    def _failed(self, reason: Failure) -> None:
        error = reason.value
        if not isinstance(error, SMTPError):  # never expected: the engine maps every failure
            error = SMTPError(f"unexpected failure probing {self._policy.address}: {error!r}")
        session = self._session
        assert session is not None
        self.observation.take(session)
        self.observation.error = error
        if session.transport is None or session.closed.called:
            self._finish(None)
        else:
            # The engine QUITs (or drops) a session whose set-up failed; wait for that.
            session.closed.addBoth(self._finish)

    def _finish(self, _: object) -> None:
        if self._session is not None:
            # Up to the end: the QUIT exchange too.
            self.observation.transcript = self._session.transcript()
        if not self.done.called:
            self.done.callback(self.observation)

    def abort(self, error: SMTPError | None = None) -> None:
        """Drop the connection now; ``error`` (for a deadline) becomes the outcome
        when none was recorded yet."""
        session = self._session
        if session is not None and session.closed.called:
            return  # over already: its outcome is on its way
        if session is not None and session.transport is not None:
            if error is not None and not session.ready.called:
                session.abort_for_deadline()
            else:
                session.abort()
            return
        # Still connecting: the outcome is settled before cancelling, which reports
        # a failure of its own.
        if error is not None and self.observation.error is None:
            self.observation.error = error
        self._finish(None)
        if self._connection is not None:
            self._connection.cancel()


def probe(reactor: Any, policy: Policy, timeout: float) -> defer.Deferred[CheckResult]:
    """Probe the policy's server (reactor thread); fires with a :class:`~syncsmtp.CheckResult`.

    Failures are recorded in the result, never raised. ``timeout`` bounds the
    whole probe; cancelling the Deferred drops the connection.
    """
    started = reactor.seconds()
    attempts: list[_Attempt] = []

    def cancel(_: defer.Deferred[CheckResult]) -> None:
        if attempts:
            attempts[-1].abort()

    done: defer.Deferred[CheckResult] = defer.Deferred(cancel)

    def attempt(attempt_policy: Policy) -> defer.Deferred[_Observation]:
        remaining = max(timeout - (reactor.seconds() - started), 0.1)
        attempts.append(_Attempt(reactor, attempt_policy, remaining))
        return attempts[-1].start()

    def deadline() -> None:
        if attempts and not done.called:
            attempts[-1].abort(connect_timeout(policy, timeout))

    timer = reactor.callLater(timeout, deadline)

    def first_done(first: _Observation) -> None:
        if isinstance(first.error, CertificateError) and policy.verify and not done.called:
            # Show the certificate all the same: a second session that does not
            # verify it, and so must not send credentials over it.
            attempt(unverified_copy(policy)).addCallback(lambda second: finish(first, second))
        else:
            finish(first, None)

    def finish(first: _Observation, second: _Observation | None) -> None:
        if timer.active():
            timer.cancel()
        if done.called:
            return
        shown = second if second is not None and second.greeting is not None else first
        if first.error is not None and isinstance(first.error, CertificateError):
            verified: bool | None = False
        elif first.tls is not None and policy.verify:
            verified = True
        else:
            verified = None
        transcript = first.transcript
        if second is not None:
            transcript += (
                "(the certificate did not verify: a second session without verification "
                "and without AUTH, to show it)",
                *second.transcript,
            )
        done.callback(
            CheckResult(
                host=policy.host,
                port=policy.effective_port,
                tls_mode=policy.tls,
                greeting=shown.greeting,
                capabilities_before_tls=shown.before_tls or first.before_tls,
                capabilities_after_tls=shown.after_tls,
                tls=shown.tls,
                certificate=shown.certificate,
                certificate_verified=verified,
                auth_attempted=bool(policy.username)
                and (first.error is None or isinstance(first.error, AuthError)),
                auth_mechanism=first.auth_mechanism,
                error=first.error,
                elapsed=reactor.seconds() - started,
                transcript=transcript,
            )
        )

    attempt(policy).addCallback(first_done)
    return done
