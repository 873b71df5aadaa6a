"""Flask integration: Flask-Mail's API, sending with syncsmtp.

Switching from Flask-Mail is a change of import::

    from syncsmtp.flask import Mail, Message

    mail = Mail(app)            # or Mail() and mail.init_app(app)
    mail.send(Message("Hello", recipients=["bob@example.com"], body="Hi Bob"))

Every ``MAIL_*`` setting keeps its meaning; the ``SYNCSMTP`` dict reaches the
policy options Flask-Mail has no setting for. Messages have the headers and
MIME structure Flask-Mail gives them; failures raise syncsmtp's typed
exceptions.
"""

from ._attachment import Attachment
from ._extension import Connection, Mail, MailState, record_messages
from ._headers import BadHeaderError
from ._message import Message
from ._signals import email_dispatched, signals

__all__ = [
    "Attachment",
    "BadHeaderError",
    "Connection",
    "Mail",
    "MailState",
    "Message",
    "email_dispatched",
    "record_messages",
    "signals",
]
