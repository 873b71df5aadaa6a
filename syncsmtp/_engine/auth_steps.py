"""Session set-up, the AUTH steps: choosing a mechanism, the exchange, and
never sending credentials in plaintext unless the policy allows it."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .. import _sasl, _twisted
from ..result import Reply
from . import failures
from .base import ANY_CODE, SessionBase
from .capabilities import Capabilities, offered_mechanisms

__all__ = ["AuthSteps"]


class AuthSteps(SessionBase):
    """AUTH as the policy says: PLAIN sent once (stock ESMTPClient retries with
    another identity), LOGIN answered by step, not by prompt text."""

    _auth_name: str | None = None

    def authenticate(self, code: int, resp: bytes, items: Capabilities) -> None:
        offered = offered_mechanisms(items)
        policy = self.policy
        if self.secret is not None and offered:
            if not _twisted.tls_started(self) and not policy.allow_plaintext_auth:
                if self.requireAuthentication:
                    self._fail(failures.no_plaintext_auth(policy.address))
                    return
            else:
                for name in policy.mechanisms:
                    if name.encode("ascii") in offered:
                        self._start_auth(name)
                        return
        if self.requireAuthentication:
            self._fail(failures.auth_required(policy.address, offered, policy.mechanisms))
        else:
            self.smtpState_from(code, resp)

    def _start_auth(self, name: str) -> None:
        assert self.policy.username is not None and self.secret is not None
        self._stage("auth")
        self.conversation.redacting = True
        self._auth_name = name
        authenticator = _sasl.mechanism(name, self.policy.username)
        _twisted.set_authenticator(self, authenticator)
        initial = authenticator.initial_response(self.secret)
        command = b"AUTH " + name.encode("ascii")
        if initial is not None and self._pipeline_auth(command + b" " + base64.b64encode(initial)):
            return
        if initial is not None:
            _twisted.expect(self, [235, 334], self.smtpState_maybeAuthenticated,
                            self._initial_response_refused)
            self.sendLine(command + b" " + base64.b64encode(initial))
        else:
            _twisted.expect(self, [334], self.esmtpState_challenge, self.esmtpAUTHServerError)
            self.sendLine(command)

    def _pipeline_auth(self, command: bytes) -> bool:
        """Send AUTH with the first message's envelope; False when that cannot be."""
        raise NotImplementedError  # SMTPClientProtocol

    def _auth_reply(self, code: int, resp: bytes) -> bool:
        """Judge the reply to an AUTH sent with the first envelope: True when it succeeded."""
        self.conversation.redacting = False
        if code == 235:
            self.authenticated_with = self._auth_name
            self.ready.callback(self)
            return True
        reply = Reply.parse(code, resp)
        error = (failures.auth_refused(self.policy.address, self._auth_name, reply) if code == 504
                 else failures.auth_declined(self.policy.address, self.policy.username,
                                             self._auth_name, reply))
        # Commands followed AUTH in the same write: the server may still answer
        # them (even DATA's 354); nothing more may be written on this connection.
        self._fail(error, fatal=True)
        if not self.ready.called:
            self._fire(self.ready, error)
        return False

    def _initial_response_refused(self, code: int, resp: bytes) -> None:
        # With the credentials in the AUTH command itself, 504 (mechanism not
        # supported) is still a refusal of the command, not of the credentials.
        if code == 504:
            self.esmtpAUTHServerError(code, resp)
        else:
            self.esmtpAUTHDeclined(code, resp)

    def _authResponse(self, auth: Any, challenge: bytes) -> None:  # noqa: N802
        try:
            decoded = base64.b64decode(challenge, validate=True)
        except binascii.Error:
            _twisted.expect(self, ANY_CODE, self.esmtpAUTHMalformedChallenge,
                            self.esmtpAUTHMalformedChallenge)
            self.sendLine(b"*")  # RFC 4954: cancel the exchange
            return
        _twisted.expect(self, [235, 334], self.smtpState_maybeAuthenticated, self.esmtpAUTHDeclined)
        self.sendLine(base64.b64encode(auth.challengeResponse(self.secret, decoded)))

    def smtpState_maybeAuthenticated(self, code: int, resp: bytes) -> None:  # noqa: N802
        if code == 235:
            self.conversation.redacting = False
            self.authenticated_with = self._auth_name
            self.smtpState_from(code, resp)
        else:
            self._authResponse(_twisted.authenticator(self), resp)

    def esmtpAUTHDeclined(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        reply = Reply.parse(code, resp or b"")
        self._fail(failures.auth_declined(self.policy.address, self.policy.username, self._auth_name,
                                          reply))

    def esmtpAUTHServerError(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        self._fail(failures.auth_refused(self.policy.address, self._auth_name,
                                         Reply.parse(code, resp or b"")))

    def esmtpAUTHMalformedChallenge(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self.conversation.redacting = False
        self._fail(failures.auth_malformed(self.policy.address, self._auth_name))

    def esmtpAUTHRequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(failures.auth_required(self.policy.address, set(), self.policy.mechanisms))
