"""Client sides of the SASL mechanisms AUTH uses (no Twisted here).

Each object answers Twisted's ``IClientAuthentication`` shape (``getName`` and
``challengeResponse``), so ``ESMTPClient`` can drive it.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["CramMD5", "Login", "Mechanism", "Plain", "mechanism"]


class Mechanism:
    """One SASL mechanism bound to a user name."""

    name = b""

    def __init__(self, username: str) -> None:
        self._username = username.encode("utf-8")

    def getName(self) -> bytes:  # noqa: N802 (Twisted's interface name)
        return self.name

    def initial_response(self, secret: bytes) -> bytes | None:
        """The response sent with the AUTH command itself, if the mechanism has one."""
        return None

    def challengeResponse(self, secret: bytes, challenge: bytes) -> bytes:  # noqa: N802
        raise NotImplementedError


class Plain(Mechanism):
    """RFC 4616: ``\\0user\\0password`` with an empty authorisation identity,
    sent once with the AUTH command."""

    name = b"PLAIN"

    def initial_response(self, secret: bytes) -> bytes:
        return b"\0" + self._username + b"\0" + secret

    def challengeResponse(self, secret: bytes, challenge: bytes) -> bytes:  # noqa: N802
        # A server that sends "334" to AUTH PLAIN with a response wants it again.
        return self.initial_response(secret)


class Login(Mechanism):
    """The LOGIN mechanism: the user name, then the password, whatever the
    prompts say (servers word them differently)."""

    name = b"LOGIN"

    def __init__(self, username: str) -> None:
        super().__init__(username)
        self._step = 0

    def challengeResponse(self, secret: bytes, challenge: bytes) -> bytes:  # noqa: N802
        self._step += 1
        return self._username if self._step == 1 else secret


class CramMD5(Mechanism):
    """RFC 2195: the user name and an HMAC-MD5 of the server's challenge."""

    name = b"CRAM-MD5"

    def challengeResponse(self, secret: bytes, challenge: bytes) -> bytes:  # noqa: N802
        digest = hmac.new(secret, challenge, hashlib.md5).hexdigest()
        return self._username + b" " + digest.encode("ascii")


_MECHANISMS: dict[str, type[Mechanism]] = {"PLAIN": Plain, "LOGIN": Login, "CRAM-MD5": CramMD5}


def mechanism(name: str, username: str) -> Mechanism:
    """A fresh mechanism object for one authentication attempt."""
    return _MECHANISMS[name.upper()](username)
