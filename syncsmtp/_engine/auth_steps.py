"""Session set-up, the AUTH steps: choosing a mechanism, the SASL exchange with
the policy's :class:`~syncsmtp.Authenticator` objects, one more try when the
mechanism asks for it (an OAuth2 token refreshed), and never sending
credentials in plaintext unless the policy allows it.

An authenticator whose ``begin`` may block (a token fetched over the network)
is called in a worker thread of the reactor's thread pool; the session waits
for it without blocking the reactor, under the send's deadline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

from twisted.internet import threads
from twisted.python.failure import Failure

from .. import _twisted
from ..auth import AuthAttempt, Authenticator, SASLExchange
from ..result import Reply
from . import failures
from .base import ANY_CODE, SessionBase
from .capabilities import Capabilities, offered_mechanisms

__all__ = ["AuthSteps"]

#: How many times AUTH may be tried again on one connection when the mechanism asks.
MAX_AUTH_RETRIES = 1
#: Mechanisms whose initial response completes the exchange: only their AUTH
#: may go in one write with the envelope (another mechanism's server challenge
#: would take the next command written for the response it waits for).
ONE_STEP_MECHANISMS = frozenset({"PLAIN", "XOAUTH2", "OAUTHBEARER"})


class AuthSteps(SessionBase):
    """AUTH as the policy says: PLAIN sent once (stock ESMTPClient retries with
    another identity), LOGIN answered by step, not by prompt text, OAuth2
    refreshed once after a refusal."""

    _auth_name: str | None = None
    _authenticator: Authenticator | None = None
    _exchange: SASLExchange | None = None
    _auth_retries = 0

    def authenticate(self, code: int, resp: bytes, items: Capabilities) -> None:
        offered = offered_mechanisms(items)
        policy = self.policy
        if policy.username and offered:
            if not _twisted.tls_started(self) and not policy.allow_plaintext_auth:
                if self.requireAuthentication:
                    self._fail(failures.no_plaintext_auth(policy.address))
                    return
            else:
                verified_tls = policy.verify and _twisted.tls_started(self)
                for authenticator in policy.sasl_authenticators(verified_tls):
                    if authenticator.mechanism.upper().encode("ascii") in offered:
                        self._start_auth(authenticator)
                        return
        if self.requireAuthentication:
            self._fail(failures.auth_required(policy.address, offered, policy.mechanisms))
        else:
            self.smtpState_from(code, resp)

    def _start_auth(self, authenticator: Authenticator, refresh: bool = False) -> None:
        policy = self.policy
        assert policy.username is not None
        self._stage("auth")
        self._authenticator = authenticator
        self._auth_name = authenticator.mechanism.upper()
        attempt = AuthAttempt(policy.username, policy.host, policy.effective_port, refresh)
        # Until the exchange starts, a reply is one to no command.
        _twisted.expect(self, ANY_CODE, self._reply_while_waiting, self._reply_while_waiting)
        if not authenticator.blocking:
            try:
                exchange = authenticator.begin(attempt)
            except Exception as exc:
                self._begin_failed(Failure(exc))
                return
            self._send_auth(exchange)
            return
        waiting = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                            authenticator.begin, attempt)
        waiting.addCallbacks(self._send_auth, self._begin_failed)

    def _reply_while_waiting(self, code: int, resp: bytes) -> None:
        self._fail(failures.unsolicited(self.policy.address, Reply.parse(code, resp)), fatal=True)

    def _begin_failed(self, reason: Failure) -> None:
        if self._reading and not self.ready.called:
            cause = reason.value if reason.value is not None else Exception(reason.getErrorMessage())
            self._fail(failures.auth_begin_failed(self.policy.address, self._auth_name, cause))

    def _send_auth(self, exchange: SASLExchange) -> None:
        if not self._reading or self.ready.called:
            return  # dropped (a deadline) while a worker thread was busy
        self._exchange = exchange
        command = b"AUTH " + (self._auth_name or "").encode("ascii")
        try:
            initial = exchange.initial_response()
        except Exception as exc:
            self._begin_failed(Failure(exc))
            return
        self.conversation.redacting = True
        if initial is not None:
            # RFC 4954: an empty initial response is sent as "=".
            command += b" " + (base64.b64encode(initial) or b"=")
            if self._auth_name in ONE_STEP_MECHANISMS and self._pipeline_auth(command):
                return
            _twisted.expect(self, [235, 334], self._auth_step, self._initial_response_refused)
        else:
            _twisted.expect(self, [334], self._auth_step, self.esmtpAUTHServerError)
        self.sendLine(command)

    def _pipeline_auth(self, command: bytes) -> bool:
        """Send AUTH with the first message's envelope; False when that cannot be."""
        raise NotImplementedError  # SMTPClientProtocol

    def _auth_step(self, code: int, resp: bytes) -> None:
        if code == 235:
            self.conversation.redacting = False
            self.authenticated_with = self._auth_name
            self.smtpState_from(code, resp)
            return
        try:
            challenge = base64.b64decode(resp, validate=True)
        except binascii.Error:
            _twisted.expect(self, ANY_CODE, self.esmtpAUTHMalformedChallenge,
                            self.esmtpAUTHMalformedChallenge)
            self.sendLine(b"*")  # RFC 4954: cancel the exchange
            return
        assert self._exchange is not None
        try:
            answer = self._exchange.respond(challenge)
        except Exception as exc:
            failed = Failure(exc)
            _twisted.expect(self, ANY_CODE, lambda *_: self._begin_failed(failed))
            self.sendLine(b"*")
            return
        _twisted.expect(self, [235, 334], self._auth_step, self.esmtpAUTHDeclined)
        self.sendLine(base64.b64encode(answer))

    def _retry_wanted(self, reply: Reply) -> bool:
        """Whether the exchange asks to authenticate again after ``reply`` (and may)."""
        if reply.code == 504 or self._auth_retries >= MAX_AUTH_RETRIES or self._exchange is None:
            return False
        try:
            return bool(self._exchange.refused(reply))
        except Exception:
            return False

    def _retry(self) -> None:
        assert self._authenticator is not None
        self._auth_retries += 1
        self._start_auth(self._authenticator, refresh=True)

    def _declined(self, reply: Reply) -> Any:
        server_error = self._exchange.server_error if self._exchange is not None else None
        return failures.auth_declined(self.policy.address, self.policy.username, self._auth_name,
                                      reply, server_error)

    # -- AUTH sent with the first message's envelope ----------------------------------------------

    def _auth_reply(self, code: int, resp: bytes) -> bool:
        """Judge the reply to an AUTH sent with the first envelope: True when it succeeded."""
        self.conversation.redacting = False
        if code == 235:
            self.authenticated_with = self._auth_name
            self.ready.callback(None)
            return True
        reply = Reply.parse(code, resp)
        if code == 334 and self._exchange is not None:
            # The server takes the next line written (MAIL) as the response
            # to its challenge; the exchange only learns what it says.
            with contextlib.suppress(Exception):  # nothing to learn from a malformed challenge
                self._exchange.respond(base64.b64decode(resp, validate=True))
        if code == 334:
            self._drain_pipelined(None)
            return False
        if self._retry_wanted(reply):
            self._drain_pipelined(reply)
            return False
        error = (failures.auth_refused(self.policy.address, self._auth_name, reply) if code == 504
                 else self._declined(reply))
        # Commands followed AUTH in the same write: the server may still answer
        # them (even DATA's 354); nothing more may be written on this connection.
        self._fail(error, fatal=True)
        if not self.ready.called:
            self._fire(self.ready, error)
        return False

    def _drain_pipelined(self, refusal: Reply | None) -> None:
        """AUTH failed with commands written after it: read their replies, then
        authenticate again and send the message afresh, when nothing of it
        was taken; otherwise fail. ``refusal`` is the reply that refused AUTH
        (the exchange asked for another try); None after a challenge, whose
        answer is the reply to the first command written after AUTH."""
        queue = self._queue
        assert queue is not None
        left = queue.pending
        tx = self._inflight.popleft()
        self.conversation.adopt(tx.transcript)  # its envelope, written with AUTH, is part of set-up now
        self.transactions -= 1
        self.first = (tx.envelope, tx.progress, tx.done, tx.quit_after)
        queue.stop()
        self._queue = None  # replies go to the set-up state machine again
        final: list[Reply] = [] if refusal is None else [refusal]
        taken = False

        def one(code: int, resp: bytes) -> None:
            nonlocal left, taken
            left -= 1
            if not final:
                final.append(Reply.parse(code, resp))  # what ended the exchange
            else:
                taken = taken or 200 <= code < 400
            if left > 0:
                _twisted.expect(self, ANY_CODE, one, one)
                return
            if taken:
                # The server took a command meant to follow AUTH: it cannot be trusted.
                self._fail(self._declined(final[0]), fatal=True)
            elif refusal is not None or self._retry_wanted(final[0]):
                self._retry()
            else:
                self._fail(self._declined(final[0]))

        if left <= 0:
            self._fail(self._declined(refusal or Reply.parse(334, b"")), fatal=True)
            return
        _twisted.expect(self, ANY_CODE, one, one)

    # -- refusals ------------------------------------------------------------------------------

    def _initial_response_refused(self, code: int, resp: bytes) -> None:
        # With the credentials in the AUTH command itself, 504 (mechanism not
        # supported) is still a refusal of the command, not of the credentials.
        if code == 504:
            self.esmtpAUTHServerError(code, resp)
        else:
            self.esmtpAUTHDeclined(code, resp)

    def esmtpAUTHDeclined(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        reply = Reply.parse(code, resp or b"")
        if self._retry_wanted(reply):
            self._retry()
            return
        self._fail(self._declined(reply))

    def esmtpAUTHServerError(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        self._fail(failures.auth_refused(self.policy.address, self._auth_name,
                                         Reply.parse(code, resp or b"")))

    def esmtpAUTHMalformedChallenge(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        self._fail(failures.auth_malformed(self.policy.address, self._auth_name))

    def esmtpAUTHRequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(failures.auth_required(self.policy.address, set(), self.policy.mechanisms))
