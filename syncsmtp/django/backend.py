"""``syncsmtp.django.EmailBackend``: Django's SMTP backend, on syncsmtp."""

from __future__ import annotations

import email.utils
import os
import threading
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage, sanitize_address

from .._settings import hide_password, tls_mode
from ..client import DEFAULT_TIMEOUT
from ..errors import SMTPError
from ..mailer import Mailer
from ..policy import Policy
from ._config import build_policy, connection_settings

__all__ = ["Connection", "EmailBackend"]


class Connection(Mailer):
    """What :attr:`EmailBackend.connection` holds while the backend is open: a
    :class:`~syncsmtp.Mailer` of one connection that also answers what code
    reads from the ``smtplib.SMTP`` object of Django's backend.

    ``timeout`` is the backend's ``timeout`` (``EMAIL_TIMEOUT``) in force:
    syncsmtp's deadline for each message, 60 seconds when that is None.
    """

    def __init__(self, policy: Policy, timeout: float) -> None:
        super().__init__(policy, connections=1)
        #: The deadline of each message, in seconds.
        self.timeout = timeout


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]  # Django is not typed
    """A drop-in replacement for ``django.core.mail.backends.smtp.EmailBackend``.

    It takes the same arguments and settings with the same meaning (host,
    port, username, password, use_tls, use_ssl, timeout, ssl_keyfile,
    ssl_certfile, fail_silently; ``EMAIL_HOST`` and the other ``EMAIL_*``
    settings behind them), sends the bytes Django's backend sends, and
    returns and swallows what it does:

    - :meth:`send_messages` returns how many messages were sent; an empty
      list sends nothing and connects to nothing; a message with no
      recipients is skipped.
    - :meth:`open` connects (TLS and AUTH included) and returns True, False
      when already open, or None when it failed and ``fail_silently`` is set;
      :meth:`close` sends QUIT. Between them, and in a ``with`` block, one
      connection carries every message.
    - ``fail_silently`` swallows what Django's backend swallows: a failure to
      connect, start TLS or log in (``OSError`` there), and a message that was
      refused, lost or timed out while sending (``SMTPException`` there:
      smtplib turns a socket time-out into ``SMTPServerDisconnected``).

    Otherwise failures are syncsmtp's typed exceptions
    (:class:`~syncsmtp.ConnectError`, :class:`~syncsmtp.AuthDeclinedError`,
    :class:`~syncsmtp.RecipientsRefused`, ...). Settings that would send a
    password in plaintext raise ``ImproperlyConfigured`` here, where
    Django's backend would send it, unless ``SYNCSMTP`` allows it.

    ``timeout`` (``EMAIL_TIMEOUT``) is syncsmtp's deadline for each message,
    connect to answer; None means syncsmtp's default of 60 seconds.

    ``ssl_certfile`` and ``ssl_keyfile`` are read, as in Django's backend,
    only for a TLS connection: without TLS they are ignored, and with TLS a
    file that cannot be read raises ``ImproperlyConfigured`` from
    :meth:`open` (and from :attr:`policy`), not from the constructor.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently)
        # Rebound so that this frame's locals, which error reports show, hide it.
        password = hide_password(password)
        found = connection_settings()
        self.host = host or found.host
        self.port = port or found.port
        self.username = found.username if username is None else username
        self.password = found.password if password is None else password
        self.use_tls = found.use_tls if use_tls is None else use_tls
        self.use_ssl = found.use_ssl if use_ssl is None else use_ssl
        self.timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
        self.ssl_keyfile = found.ssl_keyfile if ssl_keyfile is None else ssl_keyfile
        self.ssl_certfile = found.ssl_certfile if ssl_certfile is None else ssl_certfile
        if self.use_ssl and self.use_tls:
            raise ValueError(
                "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
                "one of those settings to True."
            )
        self._fallback_tls = found.fallback_tls
        self._options = found.options
        self._policy: Policy | None = None
        # As in Django's backend, the certificate files are read only for a TLS
        # connection: ignored without TLS, and a missing one is an error when
        # the backend opens, not here. Every other setting is checked now.
        reads_files = tls_mode(use_tls=self.use_tls, use_ssl=self.use_ssl,
                               fallback_tls=self._fallback_tls, options=self._options) != "none"
        if not reads_files:
            self._policy = self._build_policy(certificate_files=False)
        elif all(os.path.isfile(path) for path in (self.ssl_certfile, self.ssl_keyfile) if path):
            self._policy = self._build_policy(certificate_files=True)
        else:
            self._build_policy(certificate_files=False)
        #: The open :class:`Connection` (a :class:`~syncsmtp.Mailer`) between
        #: open() and close(), else None.
        self.connection: Connection | None = None
        self._lock = threading.RLock()

    @property
    def policy(self) -> Policy:
        """The :class:`~syncsmtp.Policy` the settings make. With TLS and a
        certificate file that cannot be read, ``ImproperlyConfigured`` here,
        and so from :meth:`open`."""
        if self._policy is None:
            self._policy = self._build_policy(certificate_files=True)
        return self._policy

    def _build_policy(self, *, certificate_files: bool) -> Policy:
        return build_policy(
            host=self.host, port=self.port, username=self.username, password=self.password,
            use_tls=self.use_tls, use_ssl=self.use_ssl,
            ssl_keyfile=self.ssl_keyfile if certificate_files else None,
            ssl_certfile=self.ssl_certfile if certificate_files else None,
            fallback_tls=self._fallback_tls, options=self._options,
        )

    @property
    def _deadline(self) -> float:
        return DEFAULT_TIMEOUT if self.timeout is None else float(self.timeout)

    def open(self) -> bool | None:
        """Connect, unless already connected: True when a connection was
        opened, False when one was open, None when connecting failed and
        ``fail_silently`` is set."""
        with self._lock:
            if self.connection is not None:
                return False
            mailer = Connection(self.policy, self._deadline)
            try:
                mailer.open(timeout=self._deadline)
            except SMTPError:
                mailer.close()
                if not self.fail_silently:
                    raise
                return None
            self.connection = mailer
            return True

    def close(self) -> None:
        """QUIT the connection, if one is open."""
        with self._lock:
            mailer, self.connection = self.connection, None
        if mailer is not None:
            mailer.close()

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send the messages over one connection and return how many were sent."""
        if not email_messages:
            return 0
        with self._lock:
            opened = self.open()
            if self.connection is None or opened is None:
                return 0  # connecting failed silently
            sent = 0
            try:
                for message in email_messages:
                    if self._send(self.connection, message):
                        sent += 1
            finally:
                if opened:
                    self.close()
        return sent

    def _send(self, mailer: Mailer, message: EmailMessage) -> bool:
        if not message.recipients():
            return False
        # The envelope and the bytes exactly as Django's SMTP backend makes them.
        encoding = message.encoding or settings.DEFAULT_CHARSET
        sender = _envelope_address(sanitize_address(message.from_email, encoding))
        recipients = [_envelope_address(sanitize_address(address, encoding))
                      for address in message.recipients()]
        data = message.message().as_bytes(linesep="\r\n")
        try:
            mailer.send(data, timeout=self._deadline, sender=sender, recipients=recipients)
        except SMTPError:
            if not self.fail_silently:
                raise
            return False
        return True


def _envelope_address(address: str) -> str:
    """The address smtplib puts in MAIL FROM or RCPT TO for ``address`` (as its
    ``quoteaddr()`` does): ``sanitize_address()`` folds a long display name
    over two lines, and the envelope carries only the address."""
    return email.utils.parseaddr(address)[1] or address
