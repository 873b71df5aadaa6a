"""Envelope addresses: what smtplib sends is sent (the server judges it); what is unsafe
or cannot be read as one path is refused before any connection."""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
from collections.abc import Callable

import pytest

import syncsmtp
from syncsmtp.message import prepare_message
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
DATA = b"Subject: addresses\r\n\r\nbody\r\n"

# What the caller writes -> what goes between < and > (as smtplib.quoteaddr() puts it).
ACCEPTED = {
    "django": "django",                                    # a local part alone: the relay adds its domain
    "<django>": "django",
    "Tester <tester>": "tester",
    "user+tag.x": "user+tag.x",
    " ann@example.com ": "ann@example.com",
    "Ann <ann@example.com>": "ann@example.com",
    "ann@[127.0.0.1]": "ann@[127.0.0.1]",                  # address literals
    "ann@[IPv6:::1]": "ann@[IPv6:::1]",
    '"ann smith"@example.com': '"ann smith"@example.com',  # a quoted local part keeps its space
    "jürgen@exämple.com": "jürgen@exämple.com",            # sent when the server offers SMTPUTF8
}

# Unsafe: a control character (C0, DEL, C1) or a Unicode line separator, anywhere.
UNSAFE = [
    "ann@example.com\r\nRCPT TO:<evil@example.com>",
    "django\nDATA",
    "django\r",
    "dja\x00ngo",
    "Name\x1b[2J <django>",
    "django\x7f",
    "django\x85",
    "django\u2028RCPT TO:<evil>",
    '"ann\tsmith"@example.com',
]

# Not one path a server could read: white space or <> outside quotes, an empty side of @.
MALFORMED = ["to@", "@example.com", "@", "ann@ex ample.com", "ann smith", "ann@example.com> NOTIFY=NEVER",
             "django>", "ann@exam\u00a0ple.com", '"un"closed"@example.com']


def rcpt_lines(commands: list[bytes]) -> list[bytes]:
    return [line for line in commands if line.startswith(b"RCPT")]


@pytest.mark.parametrize("address", list(ACCEPTED))
def test_accepted_as_smtplib_sends_them(address: str) -> None:
    envelope = prepare_message(DATA, sender=address, recipients=[address])
    assert envelope.sender == ACCEPTED[address]
    assert envelope.recipients == (ACCEPTED[address],)
    assert smtplib.quoteaddr(address) == f"<{ACCEPTED[address]}>"
    assert envelope.international is not address.isascii()


def test_header_objects_as_addresses_come_back_as_plain_strings(smtp_server_factory: ServerFactory) -> None:
    # message["From"] is a str subclass carrying its parse tree; the envelope
    # and the result hold plain strings, as for any other address.
    message = email.message.EmailMessage(policy=email.policy.default)
    message["From"] = "ann@example.com"
    message["To"] = "bob@example.com"
    envelope = prepare_message(DATA, sender=message["From"], recipients=[message["To"]])
    assert (type(envelope.sender), type(envelope.recipients[0])) == (str, str)
    server = smtp_server_factory(tls="none")
    result = syncsmtp.send(DATA, server.policy(), sender=message["From"], recipients=[message["To"]],
                           timeout=10)
    assert result.accepted == ("bob@example.com",)
    assert type(result.accepted[0]) is str


@pytest.mark.parametrize("address", UNSAFE + MALFORMED)
def test_refused_before_connecting(smtp_server_factory: ServerFactory, address: str) -> None:
    server = smtp_server_factory(tls="none")
    expected = "control character" if address in UNSAFE else "not a valid address"
    for envelope in ({"sender": address, "recipients": ["bob@example.com"]},
                     {"sender": "ann@example.com", "recipients": ["bob@example.com", address]}):
        with pytest.raises(syncsmtp.MessageError, match=expected):
            syncsmtp.send(DATA, server.policy(), timeout=10, **envelope)  # type: ignore[arg-type]
    assert server.connections == 0


def test_a_local_part_alone_reaches_the_server_as_is(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    result = syncsmtp.send(DATA, server.policy(), sender="tester", recipients=["django", "Other <other>"],
                           timeout=10)
    assert result.accepted == ("django", "other")
    [commands] = server.commands
    assert b"MAIL FROM:<tester> SIZE=%d" % len(DATA) in commands
    assert rcpt_lines(commands) == [b"RCPT TO:<django>", b"RCPT TO:<other>"]
    # The server, like a local relay, completes each with its own domain.
    received = server.wait_for(1)[0]
    assert received.sender == "tester@localhost"
    assert received.recipients == ("django@localhost", "other@localhost")
    assert received.data == DATA


def test_a_local_part_alone_in_the_headers(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    message = b"From: tester\r\nTo: django, Other <other>\r\nSubject: s\r\n\r\nbody\r\n"
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    syncsmtp.send(parsed, server.policy(), timeout=10)
    [commands] = server.commands
    assert commands[1].startswith(b"MAIL FROM:<tester> ")
    assert rcpt_lines(commands) == [b"RCPT TO:<django>", b"RCPT TO:<other>"]


def test_a_non_ascii_local_part_alone_needs_smtputf8(smtp_server_factory: ServerFactory) -> None:
    without = smtp_server_factory(tls="none")
    with pytest.raises(syncsmtp.MessageRefused, match="SMTPUTF8"):
        syncsmtp.send(DATA, without.policy(), sender="tester", recipients=["jürgen"], timeout=10)
    assert not any(line.startswith(b"MAIL") for lines in without.commands for line in lines)
    # With SMTPUTF8 it goes out as UTF-8 and the server judges it (this one wants a domain there).
    with_utf8 = smtp_server_factory(tls="none", extensions=("SMTPUTF8",))
    with pytest.raises(syncsmtp.RecipientsRefused) as refused:
        syncsmtp.send(DATA, with_utf8.policy(), sender="tester", recipients=["jürgen"], timeout=10)
    assert refused.value.refused["jürgen"].code == 501
    [commands] = with_utf8.commands
    assert b"MAIL FROM:<tester> SMTPUTF8" in commands
    assert "RCPT TO:<jürgen>".encode() in commands
