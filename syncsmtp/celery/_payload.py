"""What a task carries and what it returns, as JSON-serialisable dicts (no Celery, no Twisted).

A task never carries a pickled message object: the message is serialised when
it is queued (the bytes the server will receive, Bcc left out) and travels
as base64 with its envelope and its idempotency key. Its outcome comes back as
plain data too: the fields of a :class:`~syncsmtp.SendResult`, or the error's
class name, reply and ``maybe_delivered``.
"""

from __future__ import annotations

import base64
import email.message
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._send_many import Outgoing
from ..errors import MessageError, SMTPError
from ..message import prepare_message
from ..result import Reply, SendResult

__all__ = ["Payload", "error_outcome", "payload_of", "reply_dict", "sent_outcome"]

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A Message-ID header line and its folded continuation lines.
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)

#: The version of the payload layout; a worker refuses one it does not know.
PAYLOAD_VERSION = 1

#: The statuses of a message's outcome, in a task's result.
SENT, ALREADY_SENT, MAYBE_DELIVERED, FAILED = "sent", "already_sent", "maybe_delivered", "failed"


@dataclass(frozen=True)
class Payload:
    """One message as a task carries it: the bytes to send, the envelope,
    the idempotency ``key`` and the Message-ID (None when it has none)."""

    data: bytes
    sender: str
    recipients: tuple[str, ...]
    key: str
    message_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable dict a task carries."""
        return {
            "v": PAYLOAD_VERSION,
            "data": base64.b64encode(self.data).decode("ascii"),
            "sender": self.sender,
            "recipients": list(self.recipients),
            "key": self.key,
            "message_id": self.message_id,
        }

    @classmethod
    def from_json(cls, value: object) -> Payload:
        """The payload a task carried; :class:`~syncsmtp.MessageError` when it
        is not one this version of syncsmtp made."""
        if not isinstance(value, Mapping) or value.get("v") != PAYLOAD_VERSION:
            raise MessageError(f"not a syncsmtp message payload of version {PAYLOAD_VERSION}")
        try:
            data = base64.b64decode(value["data"], validate=True)
            sender, recipients, key = value["sender"], value["recipients"], value["key"]
            message_id = value.get("message_id")
        except (KeyError, TypeError, ValueError) as error:
            raise MessageError(f"malformed syncsmtp message payload: {error}") from None
        if not (isinstance(sender, str) and isinstance(key, str) and key
                and isinstance(recipients, list) and all(isinstance(r, str) for r in recipients)
                and (message_id is None or isinstance(message_id, str))):
            raise MessageError("malformed syncsmtp message payload: wrong field types")
        return cls(data, sender, tuple(recipients), key, message_id)


def payload_of(message: object, *, sender: str | None = None,
               recipients: Iterable[str] | str | None = None, key: str | None = None) -> Payload:
    """Serialise one message now, as :meth:`Mailer.send_many
    <syncsmtp.Mailer.send_many>` takes it: an EmailMessage (envelope from its
    headers unless given), ``bytes``/``str`` with ``sender`` and
    ``recipients``, an :class:`~syncsmtp.Outgoing` or a ``(message, sender,
    recipients)`` tuple. The checks of ``send()`` apply here, so bad input
    raises :class:`~syncsmtp.MessageError` in the caller, not in a worker.

    ``key`` defaults to the Message-ID qualified by the envelope (see
    :func:`default_key`); without a Message-ID, a random key made now.
    """
    if isinstance(message, Outgoing):
        if message.dsn is not None or message.require_tls is not None:
            raise MessageError("syncsmtp.celery does not carry DSN or REQUIRETLS options; "
                               "send this message with Mailer.send_many() instead")
        message = tuple(message[:3])
    if isinstance(message, tuple):
        if len(message) != 3 or sender is not None or recipients is not None:
            raise MessageError("a queued message is a message or a (message, sender, recipients) tuple")
        message, sender, recipients = message
    if not isinstance(message, (email.message.Message, bytes, bytearray, memoryview, str)):
        raise MessageError(f"cannot queue a {type(message).__name__} as an email message")
    envelope = prepare_message(message, sender=sender, recipients=recipients)  # type: ignore[arg-type]
    data = envelope.data
    message_id = envelope.message_id or _raw_message_id(data)
    if key is None:
        key = default_key(message_id, envelope.sender, envelope.recipients)
    elif not isinstance(key, str) or not key:
        raise MessageError(f"key must be a non-empty string, not {key!r}")
    return Payload(data, envelope.sender, envelope.recipients, key, message_id)


def _raw_message_id(data: bytes) -> str | None:
    """The Message-ID header of a message given as bytes, or None."""
    head = _HEADER_END.split(data, maxsplit=1)[0]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return None
    value = " ".join(found.group(1).decode("utf-8", "replace").split())
    return value or None


def default_key(message_id: str | None, sender: str, recipients: Iterable[str]) -> str:
    """A message's default idempotency key: its Message-ID followed by a short
    digest of its envelope, so that one message sent to two lists of
    recipients is two deliveries; a random one when there is no Message-ID."""
    if not message_id:
        return f"random:{uuid.uuid4().hex}"
    envelope = "\0".join([sender, *sorted(recipients)]).encode("utf-8", "surrogateescape")
    return f"{message_id.strip()} {hashlib.sha256(envelope).hexdigest()[:16]}"


def reply_dict(reply: Reply | None) -> dict[str, Any] | None:
    """A :class:`~syncsmtp.Reply` as plain data."""
    if reply is None:
        return None
    return {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text}


def _base(index: int, payload: Payload, status: str) -> dict[str, Any]:
    return {"index": index, "key": payload.key, "message_id": payload.message_id, "status": status}


def sent_outcome(index: int, payload: Payload, result: SendResult) -> dict[str, Any]:
    """The outcome of a message the server accepted: the result's plain-data fields."""
    outcome = _base(index, payload, SENT)
    outcome.update(
        accepted=list(result.accepted),
        refused={address: reply_dict(reply) for address, reply in result.refused.items()},
        reply=reply_dict(result.reply),
        elapsed=result.elapsed,
        server=f"{result.host}:{result.port}",
    )
    return outcome


def error_outcome(index: int, payload: Payload, error: Exception, status: str) -> dict[str, Any]:
    """The outcome of a message that failed with ``error``: its class name,
    message, reply, ``transient`` and ``maybe_delivered``."""
    outcome = _base(index, payload, status)
    smtp = error if isinstance(error, SMTPError) else None
    outcome["error"] = {
        "type": type(error).__name__,
        "message": str(error),
        "reply": reply_dict(smtp.reply if smtp is not None else None),
        "stage": smtp.stage if smtp is not None else None,
        "transient": smtp.transient if smtp is not None else False,
        "maybe_delivered": smtp.maybe_delivered if smtp is not None else False,
    }
    return outcome


def recorded_outcome(index: int, payload: Payload, status: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome of a message another run of the task dealt with, from what
    it recorded in the delivery store."""
    outcome = _base(index, payload, status)
    outcome["recorded"] = dict(record)
    return outcome
