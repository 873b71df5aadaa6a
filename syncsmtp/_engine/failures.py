"""Every failure of a session or a transaction as the typed error the caller
gets, with a message that says what happened and what to do (no Twisted here).

``where`` is the server's ``host:port``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    AuthDeclinedError,
    AuthError,
    AuthMalformedChallengeError,
    AuthRequiredError,
    AuthServerError,
    CertificateError,
    ConnectError,
    ConnectionLostError,
    EHLORequiredError,
    ExtensionNotOfferedError,
    MessageRefused,
    ProtocolError,
    RecipientsRefused,
    RequireTLSError,
    SenderRefused,
    SendTimeout,
    SessionRefused,
    TLSFailedError,
    TLSRequiredError,
)
from ..policy import Policy
from ..result import Reply

# -- connecting and the connection --------------------------------------------------------------


def cannot_connect(policy: Policy, why: str) -> ConnectError:
    return ConnectError(
        f"cannot connect to {policy.address}: {why}; check the host name, the port and that the "
        "server is running",
        host=policy.host,
        stage="connect",
    )


def connect_timeout(policy: Policy, timeout: float) -> SendTimeout:
    """The error of a deadline that passed before a connection was made."""
    return SendTimeout(
        f"could not connect to {policy.address} within {timeout:g} s; check the host, the "
        "port and any firewall",
        host=policy.host,
        stage="connect",
    )


def turned_away(where: str, reply: Reply) -> SessionRefused:
    return SessionRefused(f"{where} turned the session away: {reply}", reply=reply)


def deadline(where: str, stage: str, maybe_delivered: bool) -> SendTimeout:
    return SendTimeout(
        f"{where} did not answer in time (waiting at stage {stage!r}); the whole send has one "
        "deadline: raise timeout= if the server or the message is slow",
        stage=stage,
        maybe_delivered=maybe_delivered,
    )


def certificate_failed(where: str, why: str) -> CertificateError:
    return CertificateError(
        f"the certificate of {where} did not verify ({why}); if the server uses a private CA, "
        "pass its certificate as ca_file=, and check that the policy's host is a name the "
        "certificate is for",
    )


def handshake_failed(where: str, why: str) -> TLSFailedError:
    return TLSFailedError(
        f"the TLS handshake with {where} failed ({why}); check that the port and tls mode match "
        "the server (465 is implicit TLS, 587 and 25 use STARTTLS)",
    )


def lost(where: str, stage: str, why: str, maybe_delivered: bool) -> ConnectionLostError:
    if maybe_delivered:
        return ConnectionLostError(
            f"{where} closed the connection after the whole message was sent but before it "
            "answered: the message may have been delivered. It was not sent again; check before "
            "resending, or risk a duplicate",
            maybe_delivered=True,
        )
    return ConnectionLostError(
        f"{where} closed the connection during {stage!r} ({why}); nothing was delivered",
    )


# -- replies that are not replies ----------------------------------------------------------------


def not_a_reply(where: str, line: bytes) -> ProtocolError:
    return ProtocolError(
        f"{where} sent something that is not an SMTP reply: "
        f"{line[:80].decode('utf-8', 'replace')!r}"
    )


def reply_too_long(where: str, lines: int, size: int) -> ProtocolError:
    return ProtocolError(
        f"{where} sent a reply of more than {lines} lines or {size} bytes; no SMTP reply is "
        "that long"
    )


def line_too_long(where: str, size: int) -> ProtocolError:
    return ProtocolError(
        f"{where} sent a line longer than {size} bytes; no SMTP reply line is that long"
    )


def early_reply(where: str, after: str) -> ProtocolError:
    return ProtocolError(
        f"{where} sent more after its {after} reply, before the message data; nothing was sent. "
        "The server or something in between is misbehaving"
    )


def unsolicited(where: str, reply: Reply) -> ProtocolError:
    return ProtocolError(f"{where} sent a reply to no command: {reply}", reply=reply)


# -- EHLO, TLS, AUTH --------------------------------------------------------------------------------


def helo_refused(where: str, reply: Reply) -> ProtocolError:
    return ProtocolError(f"{where} refused both EHLO and HELO: {reply}", reply=reply)


def ehlo_required(where: str, reply: Reply | None, needs_security: bool) -> EHLORequiredError:
    needs = "TLS or authentication" if needs_security else "ESMTP"
    hint = "" if needs_security else "; set helo_fallback=True to allow plain HELO"
    return EHLORequiredError(
        f"{where} refused EHLO ({reply}), and the policy needs {needs}{hint}", reply=reply
    )


def tls_required(where: str) -> TLSRequiredError:
    # The first sentence is smtplib's, word for word: code (and Django's own
    # tests) written against smtplib look for it.
    return TLSRequiredError(
        f"STARTTLS extension not supported by server. The server at {where} does not offer "
        "STARTTLS, and the policy requires TLS; use tls='implicit' if it expects TLS from the "
        "start (port 465), or tls='opportunistic' to allow plaintext"
    )


def starttls_refused(where: str, reply: Reply) -> TLSFailedError:
    return TLSFailedError(
        f"{where} offered STARTTLS but refused it: {reply}; the policy requires TLS "
        "(tls='opportunistic' would go on without it)",
        reply=reply,
    )


def starttls_injection(where: str) -> TLSFailedError:
    return TLSFailedError(
        f"{where} sent data after its STARTTLS reply, before the TLS handshake; such data could "
        "be an injected command (CVE-2011-0411), so the connection was closed. Report this to "
        "the server's administrators"
    )


def tls_not_started(where: str, why: object) -> TLSFailedError:
    return TLSFailedError(f"cannot start TLS with {where}: {why}")


def tls_failed(where: str) -> TLSFailedError:
    return TLSFailedError(f"the TLS handshake with {where} failed")


def no_plaintext_auth(where: str) -> TLSRequiredError:
    return TLSRequiredError(
        f"{where} offers no TLS on this connection, and the policy will not send credentials in "
        "plaintext; use tls='starttls' or 'implicit', or allow_plaintext_auth=True for a trusted "
        "local relay"
    )


def auth_required(where: str, offered: set[bytes], allowed: tuple[str, ...]) -> AuthRequiredError:
    names = ", ".join(sorted(m.decode("ascii", "replace") for m in offered)) or "none"
    # smtplib's sentences for the same two cases, word for word, come first.
    smtplib_says = ("No suitable authentication method found." if offered
                    else "SMTP AUTH extension not supported by server.")
    return AuthRequiredError(
        f"{smtplib_says} The policy requires authentication, but {where} offers no mechanism "
        "syncsmtp can use "
        f"(server offers: {names}; policy allows: {', '.join(allowed)}); adjust auth_mechanisms, "
        "or require_auth=False to send without authenticating"
    )


def auth_declined(where: str, username: str | None, mechanism: str | None, reply: Reply,
                  server_error: Mapping[str, Any] | None = None) -> AuthDeclinedError:
    later = " (a temporary failure: try again later)" if reply.transient else ""
    if mechanism in ("XOAUTH2", "OAUTHBEARER"):
        status = f" (the server's OAuth2 error status: {dict(server_error)})" if server_error else ""
        return AuthDeclinedError(
            f"{where} rejected the OAuth2 token for {username!r} with {mechanism}: {reply}{status}; "
            f"check that the token is for this user and has the scope SMTP needs{later}",
            reply=reply,
            server_error=dict(server_error) if server_error else None,
        )
    return AuthDeclinedError(
        f"{where} rejected the credentials for {username!r} with {mechanism}: {reply}; check "
        f"the user name and password{later}",
        reply=reply,
        server_error=dict(server_error) if server_error else None,
    )


def auth_begin_failed(where: str, mechanism: str | None, cause: BaseException) -> AuthError:
    """An authenticator (an OAuth2 token callable, say) raised instead of starting AUTH."""
    error = AuthError(
        f"could not authenticate with {where}: getting the {mechanism} credentials raised "
        f"{type(cause).__name__}: {cause}"
    )
    error.__cause__ = cause
    return error


def auth_refused(where: str, mechanism: str | None, reply: Reply) -> AuthServerError:
    return AuthServerError(
        f"{where} refused AUTH {mechanism}: {reply}; try another mechanism with auth_mechanisms=",
        reply=reply,
    )


def auth_malformed(where: str, mechanism: str | None) -> AuthMalformedChallengeError:
    return AuthMalformedChallengeError(
        f"{where} sent an AUTH {mechanism} challenge that is not base64; the exchange was "
        "cancelled. Try another mechanism with auth_mechanisms="
    )


# -- the transaction ----------------------------------------------------------------------------


def smtputf8_missing(where: str) -> MessageRefused:
    return MessageRefused(
        f"{where} does not offer SMTPUTF8, which the non-ASCII addresses of this message need; "
        "use ASCII (IDNA) addresses"
    )


def too_big(where: str, size: int, limit: int) -> MessageRefused:
    return MessageRefused(
        f"the message is {size} bytes, and {where} accepts at most {limit} (its SIZE); nothing "
        "was sent"
    )


def dsn_missing(where: str) -> ExtensionNotOfferedError:
    return ExtensionNotOfferedError(
        f"{where} does not offer DSN, and this message asks for delivery status notifications; "
        "nothing was sent. Use DSN(..., required=False) to send without them",
        extension="DSN",
    )


def requiretls_missing(where: str) -> ExtensionNotOfferedError:
    return ExtensionNotOfferedError(
        f"{where} does not offer REQUIRETLS, and this message was sent with require_tls=True; "
        "nothing was sent. The server cannot promise to relay it over TLS only",
        extension="REQUIRETLS",
    )


def requiretls_without_tls(where: str, encrypted: bool) -> RequireTLSError:
    why = ("the policy does not verify its certificate (verify=False)" if encrypted
           else "the session is not encrypted")
    return RequireTLSError(
        f"require_tls=True needs TLS with a verified certificate, but with {where} {why}; "
        "nothing was sent. Use tls='starttls' or 'implicit' with verify=True"
    )


def rset_refused(where: str, reply: Reply) -> ProtocolError:
    return ProtocolError(f"{where} refused RSET: {reply}", reply=reply)


def sender_refused(where: str, sender: str, reply: Reply) -> SenderRefused:
    hint = "; the server wants authentication: set username and password" if reply.code == 530 else ""
    return SenderRefused(f"{where} refused the sender {sender!r}: {reply}{hint}", reply=reply,
                         sender=sender)


def recipients_refused(where: str, refused: Mapping[str, Reply]) -> RecipientsRefused:
    details = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
    return RecipientsRefused(
        f"{where} refused every recipient ({details}); nothing was sent",
        refused=refused,
        reply=next(iter(refused.values()), None),
    )


def data_refused(where: str, command: str, reply: Reply) -> MessageRefused:
    return MessageRefused(f"{where} refused the {command} command: {reply}", reply=reply)


def message_refused(where: str, reply: Reply) -> MessageRefused:
    return MessageRefused(f"{where} refused the message: {reply}", reply=reply)


def neither_answer(where: str, reply: Reply) -> ProtocolError:
    return ProtocolError(
        f"{where} answered the message data with {reply}, which is neither an acceptance nor a "
        "refusal: the message may have been delivered. It was not sent again; check before "
        "resending, or risk a duplicate",
        reply=reply,
    )


def auth_not_confirmed(where: str) -> ProtocolError:
    return ProtocolError(
        f"{where} asked for the message data before authentication had succeeded; the "
        "connection was dropped and no data was sent"
    )
