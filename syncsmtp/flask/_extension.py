"""``Mail``, Flask-Mail's extension object, sending through a :class:`~syncsmtp.Mailer`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from flask import Flask, current_app

from ..mailer import Mailer
from ..message import prepare_message
from ..result import SendResult
from ._addresses import AddressInput, sender_text
from ._config import read_settings
from ._message import Message
from ._signals import email_dispatched

__all__ = ["Connection", "Mail", "MailState", "record_messages"]

_Prepared = tuple[EmailMessage, str, list[str]]


@contextlib.contextmanager
def record_messages() -> Iterator[list[Message]]:
    """Collect every :class:`Message` dispatched while the block runs, from
    any app and thread, into the list it yields (through
    :data:`email_dispatched`). With ``MAIL_SUPPRESS_SEND`` the messages are
    recorded and not sent::

        with mail.record_messages() as outbox:
            client.post("/signup", data={"email": "new@example.com"})
        assert outbox[0].subject == "Welcome"
    """
    outbox: list[Message] = []

    def record(app: Flask, message: Message, **extra: Any) -> None:
        outbox.append(message)

    with email_dispatched.connected_to(record):
        yield outbox


class MailState:
    """One app's mail settings and connections, kept in ``app.extensions["mail"]``.

    Its attributes are Flask-Mail's (``server``, ``port``, ``username``,
    ``use_tls``, ``use_ssl``, ``default_sender``, ``debug``, ``max_emails``,
    ``suppress``, ``ascii_attachments``), plus the :class:`~syncsmtp.Policy`
    they make (``policy``), the most connections the app keeps open
    (``connections``) and the deadline of each message in seconds
    (``timeout``). Settings are read once, when it is made by ``init_app``.

    Its :meth:`send` goes through one :class:`~syncsmtp.Mailer`, made at the
    first send and shared by every thread of the app.
    """

    def __init__(self, app: Flask) -> None:
        settings = read_settings(app.config, debug=app.debug, testing=app.testing)
        self.app = app
        self.server = settings.server
        self.port = settings.port
        self.username = settings.username
        self.password = settings.password
        self.use_tls = settings.use_tls
        self.use_ssl = settings.use_ssl
        self.default_sender = settings.default_sender
        self.debug = settings.debug
        self.max_emails = settings.max_emails
        self.suppress = settings.suppress
        self.ascii_attachments = settings.ascii_attachments
        self.policy = settings.policy
        self.connections = settings.connections
        self.timeout = settings.timeout
        self._lock = threading.Lock()
        self._mailer: Mailer | None = None
        self._sent = 0
        self._users: dict[Mailer, int] = {}

    def send(self, message: Message) -> SendResult | None:
        """Send ``message`` over one of the app's connections and return the
        :class:`~syncsmtp.SendResult`; None when ``MAIL_SUPPRESS_SEND`` is set
        (the message is checked, and :data:`email_dispatched` sent, all the same).

        Raises :class:`BadHeaderError` or :class:`~syncsmtp.MessageError`
        before connecting for a message that cannot be sent, and a
        :class:`~syncsmtp.SMTPError` subclass when sending fails."""
        built, sender, recipients = self.prepare(message)
        result = None
        if not self.suppress:
            with self._lease() as mailer:
                result = mailer.send(built, self.timeout, sender=sender, recipients=recipients)
            self._log(result)
        email_dispatched.send(self.app, message=message)
        return result

    def send_message(self, *args: Any, **kwargs: Any) -> SendResult | None:
        """``send(Message(*args, **kwargs))``."""
        return self.send(Message(*args, **kwargs))

    def connect(self) -> Connection:
        """A :class:`Connection` of its own, for a ``with`` block."""
        return Connection(self)

    def record_messages(self) -> contextlib.AbstractContextManager[list[Message]]:
        """See :func:`record_messages`."""
        return record_messages()

    def close(self) -> None:
        """Close the app's connections (QUIT) once the sends under way are done;
        the next send connects again."""
        with self._lock:
            mailer, self._mailer = self._mailer, None
            idle = mailer is not None and mailer not in self._users
        if mailer is not None and idle:
            mailer.close()

    def prepare(self, message: Message, envelope_from: AddressInput | None = None) -> _Prepared:
        """The :class:`~email.message.EmailMessage`, envelope sender and
        recipients that sending ``message`` sends, checked as a send checks
        them. Sets the message's ``sender`` (to ``MAIL_DEFAULT_SENDER``) and
        ``date`` (to now) when they are not set, as Flask-Mail does."""
        if not message.sender:
            message.sender = sender_text(self.default_sender)
        sender, recipients = message.envelope(envelope_from)
        if message.date is None:
            message.date = time.time()
        built = message.email_message(ascii_attachments=self.ascii_attachments)
        if self.suppress:
            prepare_message(built, sender=sender, recipients=recipients)
        return built, sender, recipients

    @contextlib.contextmanager
    def _lease(self) -> Iterator[Mailer]:
        """The app's Mailer for one message. With ``MAIL_MAX_EMAILS`` a Mailer
        carries that many messages at most, so none of its connections carries
        more; then it is retired, and closed once its last message is done."""
        with self._lock:
            mailer = self._mailer
            if mailer is None:
                mailer = self._mailer = Mailer(self.policy, self.connections)
                self._sent = 0
            self._sent += 1
            if self.max_emails and self._sent >= self.max_emails:
                self._mailer = None
            self._users[mailer] = self._users.get(mailer, 0) + 1
        try:
            yield mailer
        finally:
            with self._lock:
                remaining = self._users.pop(mailer) - 1
                if remaining:
                    self._users[mailer] = remaining
                retired = not remaining and mailer is not self._mailer
            if retired:
                mailer.close()

    def _log(self, result: SendResult | None) -> None:
        if self.debug and result is not None:
            self.app.logger.debug("sent %s to %s\n%s", result.message_id, ", ".join(result.accepted),
                                  "\n".join(result.transcript))

    def __repr__(self) -> str:
        return f"<MailState {self.policy!r} connections={self.connections} suppress={self.suppress}>"


class Connection:
    """One SMTP connection for a ``with`` block, as Flask-Mail's ``Connection``::

        with mail.connect() as connection:
            for user in users:
                connection.send(Message("Hello", recipients=[user.email], body="..."))

    Entering the block connects (TLS and AUTH done; a failure raises there),
    every message of the block goes over that connection, and leaving the
    block sends QUIT. With ``MAIL_MAX_EMAILS`` set, the connection is closed
    after that many messages and the next message opens a new one. With
    ``MAIL_SUPPRESS_SEND`` nothing connects and nothing is sent.
    ``num_emails`` counts the messages since the last (re)connection.
    """

    def __init__(self, mail: MailState) -> None:
        self.mail = mail
        #: The :class:`~syncsmtp.Mailer` (one connection) while the block runs, else None.
        self.mailer: Mailer | None = None
        self.num_emails = 0
        self._open = False
        self._lock = threading.Lock()

    def __enter__(self) -> Connection:
        with self._lock:
            if self._open:
                raise RuntimeError("this Connection is open already")
            if not self.mail.suppress:
                mailer = Mailer(self.mail.policy, connections=1)
                try:
                    mailer.open(self.mail.timeout)
                except BaseException:
                    mailer.close()
                    raise
                self.mailer = mailer
            self.num_emails = 0
            self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            mailer, self.mailer = self.mailer, None
            self._open = False
        if mailer is not None:
            mailer.close()

    def send(self, message: Message, envelope_from: AddressInput | None = None) -> SendResult | None:
        """Send ``message`` over this connection, from ``envelope_from`` when
        given (MAIL FROM; the From header stays the message's sender); like
        :meth:`Mail.send` otherwise."""
        with self._lock:
            if not self._open:
                raise RuntimeError(
                    "Connection.send() outside its with block; use `with mail.connect() as connection:`"
                )
            built, sender, recipients = self.mail.prepare(message, envelope_from)
            result = None
            if self.mailer is not None:
                result = self.mailer.send(built, self.mail.timeout, sender=sender, recipients=recipients)
            self.num_emails += 1
            retired = None
            if self.num_emails == self.mail.max_emails:
                self.num_emails = 0
                if self.mailer is not None:
                    retired, self.mailer = self.mailer, Mailer(self.mail.policy, connections=1)
        if retired is not None:
            retired.close()
        self.mail._log(result)
        email_dispatched.send(self.mail.app, message=message)
        return result

    def send_message(self, *args: Any, **kwargs: Any) -> SendResult | None:
        """``send(Message(*args, **kwargs))``."""
        return self.send(Message(*args, **kwargs))


class Mail:
    """The extension, with Flask-Mail's API: ``Mail(app)``, or ``Mail()`` and
    :meth:`init_app` in an app factory.

    :meth:`send` sends over connections the app keeps open and shares
    between threads (a :class:`~syncsmtp.Mailer`, made at the first send and
    closed at interpreter exit); :meth:`connect` gives one connection of its
    own for a ``with`` block. Failures raise syncsmtp's typed exceptions
    (:class:`~syncsmtp.SMTPError` subclasses).

    Made with an app, it always uses that app; made without, it uses
    ``current_app``. Other attributes (``mail.server``, ``mail.suppress``,
    ...) are those of the app's :class:`MailState`.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        self.state: MailState | None = self.init_app(app) if app is not None else None

    def init_app(self, app: Flask) -> MailState:
        """Read the app's ``MAIL_*`` and ``SYNCSMTP`` settings and keep them, as
        a :class:`MailState`, in ``app.extensions["mail"]``.

        Raises ValueError for settings that make no usable policy, among them
        MAIL_USERNAME and MAIL_PASSWORD without MAIL_USE_TLS or MAIL_USE_SSL
        (the password would travel in plaintext) unless
        ``SYNCSMTP = {"allow_plaintext_auth": True}``."""
        state = MailState(app)
        previous = app.extensions.get("mail")
        app.extensions["mail"] = state
        if isinstance(previous, MailState):
            previous.close()
        return state

    def _current_state(self) -> MailState:
        app = self.app or current_app
        state = app.extensions.get("mail")
        if not isinstance(state, MailState):
            raise RuntimeError(
                "The current application was not configured with syncsmtp.flask: "
                "call Mail(app) or mail.init_app(app)"
            )
        return state

    def send(self, message: Message) -> SendResult | None:
        """Send ``message``: see :meth:`MailState.send`."""
        return self._current_state().send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> SendResult | None:
        """``send(Message(*args, **kwargs))``."""
        return self.send(Message(*args, **kwargs))

    def connect(self) -> Connection:
        """A :class:`Connection`: one SMTP connection for a ``with`` block."""
        return self._current_state().connect()

    def record_messages(self) -> contextlib.AbstractContextManager[list[Message]]:
        """Collect the messages dispatched in a ``with`` block: see :func:`record_messages`."""
        return record_messages()

    def close(self) -> None:
        """Close the app's shared connections: see :meth:`MailState.close`."""
        self._current_state().close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("app", "state"):
            raise AttributeError(name)
        try:
            state = self._current_state()
        except RuntimeError:
            raise AttributeError(name) from None
        return getattr(state, name)
