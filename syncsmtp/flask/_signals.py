"""The ``email_dispatched`` signal, as Flask-Mail has it (blinker, which Flask depends on)."""

from __future__ import annotations

import blinker

__all__ = ["email_dispatched", "signals"]

#: The namespace of this extension's signals.
signals = blinker.Namespace()

#: Sent after each message is sent, with the app as sender and ``message=``
#: the :class:`~syncsmtp.flask.Message`; also when ``MAIL_SUPPRESS_SEND``
#: keeps the message from being sent. ``record_messages()`` listens to it.
email_dispatched = signals.signal(
    "email-dispatched",
    doc="Sent when a message is dispatched (also when MAIL_SUPPRESS_SEND keeps it from being sent).",
)
