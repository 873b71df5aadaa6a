"""serialize() against BytesGenerator: the same wire form for a broad corpus of
messages, the caller's message left alone, and the same errors."""

from __future__ import annotations

import copy
import datetime
import email
import email.generator
import email.header
import email.message
import email.policy
import io
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.headerregistry import Address, BaseHeader, Group, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import make_msgid
from typing import Any, cast

import pytest

import syncsmtp._serialize as serialize_module
from syncsmtp._serialize import Part, serialize
from syncsmtp._wire import encode_data, encoded_size, iter_encoded

Build = Callable[[], Message]

_NEWLINE = re.compile(rb"\r\n|\r|\n")
_RANDOM_BOUNDARY = re.compile(rb"={15}\d+==(?:\.\d+)?")
_SKIP_BCC = frozenset({"bcc", "resent-bcc"})


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    #: Whether serialize() hands (part of) this message to BytesGenerator.
    generated: bool


CORPUS: list[Case] = []
RAISING: list[Case] = []


def corpus(name: str, *, generated: bool = False) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        CORPUS.append(Case(name, build, generated))
        return build

    return register


def raising(name: str, *, generated: bool = False) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        RAISING.append(Case(name, build, generated))
        return build

    return register


# Helpers -----------------------------------------------------------------------------------------


def _as_bytes(part: Part) -> bytes:
    return part.encode("ascii") if isinstance(part, str) else part


def normalise(parts: list[Part]) -> bytes:
    """The parts joined, each with every line break made a CRLF by itself."""
    return b"".join(_NEWLINE.sub(b"\r\n", _as_bytes(part)) for part in parts)


def unstuff(wire: bytes) -> bytes:
    """The message a server reads from DATA: terminator stripped, dots unstuffed."""
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def name_boundaries(data: bytes) -> bytes:
    """Random boundaries replaced by names in the order they first appear."""
    names: dict[bytes, bytes] = {}
    return _RANDOM_BOUNDARY.sub(lambda match: names.setdefault(match[0], b"<boundary %d>" % len(names)), data)


def generate(message: Message, *, utf8: bool = False, skip: frozenset[str] = frozenset()) -> bytes:
    """What BytesGenerator writes (this writes new boundaries into ``message``)."""
    if skip:
        message = copy.copy(message)
        for name in skip:
            del message[name]
    options: dict[str, Any] = {"utf8": True} if utf8 else {}
    policy = message.policy.clone(linesep="\r\n", **options)
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(message)
    return buffer.getvalue()


def walk(message: Message) -> Iterator[Message]:
    """Like ``message.walk()``, but past anything in a payload list that is not a message."""
    yield message
    payload = vars(message).get("_payload")
    if isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from walk(part)


def state(message: Message) -> list[dict[str, Any]]:
    """Every attribute of every part, with a copy of each list (to catch changes in place)."""
    return [
        {key: (value, list(value) if isinstance(value, list) else None) for key, value in vars(part).items()}
        for part in walk(message)
    ]


def needs_boundary(part: Message) -> bool:
    """Whether BytesGenerator writes a new boundary into ``part``."""
    return (
        part.get_content_maintype() == "multipart"
        and not isinstance(vars(part).get("_payload"), str)
        and not part.get_boundary()
    )


def lacks_boundary(message: Message) -> bool:
    return any(needs_boundary(part) for part in walk(message))


def _email(policy: Any = email.policy.default, **headers: Any) -> EmailMessage:
    message = EmailMessage(policy=policy)
    message["From"] = "Alice Sender <alice@example.com>"
    message["To"] = "bob@example.org"
    message["Subject"] = "A test message"
    for key, value in headers.items():
        name = key.replace("_", "-")
        del message[name]
        message[name] = value
    return message


def _text(
    body: str, policy: Any = email.policy.default, content: dict[str, Any] | None = None, **headers: Any
) -> EmailMessage:
    message = _email(policy, **headers)
    message.set_content(body, **(content or {}))
    return message


def _raw(body: str | bytes, policy: Any = email.policy.default) -> EmailMessage:
    message = _email(policy)
    message["Content-Type"] = "text/plain"
    message.set_payload(body)
    return message


def _parse(data: bytes, policy: Any = email.policy.default) -> Message:
    return email.message_from_bytes(data, policy=policy)


def _subpart(message: EmailMessage, index: int) -> EmailMessage:
    part = message.get_payload(index)
    assert isinstance(part, EmailMessage)
    return part


def _alternative() -> EmailMessage:
    message = _text("Plain text.\n")
    message.add_alternative("<p>HTML text.</p>\n", subtype="html")
    return message


def _signed() -> EmailMessage:
    message = _email()
    message["Content-Type"] = 'multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256'
    body = EmailMessage()
    body["Content-Type"] = "text/plain; charset=us-ascii"
    body["X-A-Very-Long-Header-In-The-Signed-Part"] = "which must not be refolded " * 4
    body.set_payload("Signed text.\n")
    signature = EmailMessage()
    signature["Content-Type"] = "application/pgp-signature"
    signature.set_payload("-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n")
    message.attach(body)
    message.attach(signature)
    return message


BINARY = bytes(range(256)) * 4
LONG_WORDS = " ".join(f"word{index}" for index in range(40))
NON_ASCII = "Grüße aus Köln — ça va? 日本語"

PARSED_SIMPLE = (
    b"Return-Path: <alice@example.com>\r\n"
    b"Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
    b"\tby mx.example.org (Postfix) with ESMTPS id 4ABCD\r\n"
    b"\tfor <bob@example.org>; Mon, 1 Jan 2024 10:00:00 +0000 (UTC)\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>,\r\n Carol <carol@example.org>\r\n"
    b"Subject: a folded\r\n subject line\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <parsed@example.com>\r\n"
    b"\r\n"
    b"Line one.\r\n.dot line\r\nFrom the start\r\n"
)

PARSED_MULTIPART = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"This is the preamble.\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Gr=C3=BC=C3=9Fe</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="data.bin"\r\n'
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--outer--\r\n"
    b"The epilogue.\r\n"
)

DELIVERY_STATUS = (
    b"From: MAILER-DAEMON@example.org\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="report"\r\n'
    b"\r\n"
    b"--report\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Your message could not be delivered.\r\n"
    b"--report\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; nobody@example.org\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"\r\n"
    b"--report\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: alice@example.com\r\n"
    b"To: nobody@example.org\r\n"
    b"Subject: lost\r\n"
    b"\r\n"
    b"Lost text.\r\n"
    b"--report--\r\n"
)


# Policies ----------------------------------------------------------------------------------------


@corpus("policy-default")
def _() -> Message:
    return _text("Hello, Bob.\n")


@corpus("policy-SMTP")
def _() -> Message:
    return _text("Hello, Bob.\n", email.policy.SMTP)


@corpus("policy-SMTPUTF8")
def _() -> Message:
    message = _text(NON_ASCII + "\n", email.policy.SMTPUTF8)
    message.replace_header("Subject", NON_ASCII)
    return message


@corpus("policy-HTTP")
def _() -> Message:
    message = _raw("Hello.\n", email.policy.HTTP)
    message["X-Long"] = LONG_WORDS
    return message


@corpus("policy-strict")
def _() -> Message:
    return _text("Hello, Bob.\n", email.policy.strict)


@corpus("policy-max-line-length-0")
def _() -> Message:
    message = _raw("Hello.\n", email.policy.default.clone(max_line_length=0))
    message["X-Long"] = LONG_WORDS
    message["X-Non-Ascii"] = NON_ASCII * 4
    return message


@corpus("policy-max-line-length-40")
def _() -> Message:
    message = _text("Hello.\n", email.policy.default.clone(max_line_length=40))
    message["X-Long"] = LONG_WORDS
    message.replace_header("To", "Someone Long <someone.long@example.org>, other@example.org")
    message["X-Fits-40"] = "x" * (40 - len("X-Fits-40: "))
    message["X-Over-40"] = "x" * (41 - len("X-Over-40: "))
    return message


@corpus("policy-max-line-length-None")
def _() -> Message:
    message = _raw("Hello.\n", email.policy.default.clone(max_line_length=None))
    message["X-Long"] = LONG_WORDS * 3
    return message


@corpus("policy-7bit-ascii")
def _() -> Message:
    return _text("Plain ASCII.\n", email.policy.default.clone(cte_type="7bit"))


@corpus("policy-7bit-non-ascii-text")
def _() -> Message:
    message = _text(NON_ASCII + "\n", email.policy.default.clone(cte_type="7bit"))
    message.replace_header("Subject", NON_ASCII)
    return message


@corpus("policy-refold-all")
def _() -> Message:
    return _parse(PARSED_SIMPLE, email.policy.default.clone(refold_source="all"))


@corpus("policy-refold-none")
def _() -> Message:
    return _parse(
        PARSED_SIMPLE.replace(b"a folded", b"a folded " * 20),
        email.policy.default.clone(refold_source="none"),
    )


@corpus("policy-max-line-length-10")
def _() -> Message:
    message = _email(email.policy.default.clone(max_line_length=10), X_Long_Header_Name="v")
    message.set_content("abc def\n")
    return message


@corpus("policy-linesep-crlf-base64")
def _() -> Message:
    message = _email(email.policy.SMTP)
    message.set_content(BINARY, maintype="application", subtype="octet-stream", cte="base64")
    return message


@corpus("policy-mangle-from")
def _() -> Message:
    return _text("From the start\n>From quoted\n", email.policy.default.clone(mangle_from_=True))


@corpus("policy-subclass", generated=True)
def _() -> Message:
    return _text("Hello.\n", type("OwnPolicy", (email.policy.EmailPolicy,), {})())


@corpus("policy-own-header-class")
def _() -> Message:
    class ShoutingHeader(UnstructuredHeader):
        @classmethod
        def parse(cls, value: str, kwds: dict[str, Any]) -> None:
            super().parse(value, kwds)
            kwds["decoded"] = kwds["decoded"].upper()

    registry = HeaderRegistry()
    registry.map_to_type("x-shout", cast("type[BaseHeader]", ShoutingHeader))
    return _text("Hello.\n", email.policy.default.clone(header_factory=registry), X_Shout="quiet words")


@corpus("policy-no-default-header-map")
def _() -> Message:
    policy = email.policy.default.clone(header_factory=HeaderRegistry(use_default_map=False))
    return _text("Hello.\n", policy, Date="Thu, 29 Feb 2024 12:30:05 +0200", Cc="Carol <c@example.org>")


@corpus("message-writes-own-headers", generated=True)
def _() -> Message:
    class OwnHeaders(EmailMessage):
        def _write_headers(self, generator: email.generator.Generator) -> None:
            generator.write("X-Own: headers\n\n")

    message = OwnHeaders()
    message.set_content("Body.\n")
    return message


# compat32 ----------------------------------------------------------------------------------------


@corpus("compat32-message", generated=True)
def _() -> Message:
    message = Message()
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.org"
    message["Subject"] = "compat32 " + LONG_WORDS
    message.set_payload("Body.\n.dot\n")
    return message


@corpus("compat32-mimetext-ascii", generated=True)
def _() -> Message:
    message = MIMEText("Hello.\r\nFrom here.\r\n")
    message["Subject"] = "MIMEText"
    return message


@corpus("compat32-mimetext-utf8", generated=True)
def _() -> Message:
    message = MIMEText(NON_ASCII, "plain", "utf-8")
    message["Subject"] = cast(Any, email.header.Header(NON_ASCII, "utf-8"))
    return message


@corpus("compat32-mimemultipart-no-boundary", generated=True)
def _() -> Message:
    message = MIMEMultipart()
    message["Subject"] = "multipart"
    message.attach(MIMEText("Text part.\n"))
    message.attach(MIMEApplication(BINARY, Name="data.bin"))
    return message


@corpus("compat32-mimemultipart-nested", generated=True)
def _() -> Message:
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("plain\n"))
    alternative.attach(MIMEText("<p>html</p>\n", "html"))
    message = MIMEMultipart(_subparts=[alternative, MIMEText("more\n")])
    message.preamble = "preamble\n"
    message.epilogue = "epilogue\n"
    return message


@corpus("compat32-mimemultipart-boundary", generated=True)
def _() -> Message:
    return MIMEMultipart(boundary="fixed-boundary", _subparts=[MIMEText("a\n"), MIMEText("b\n")])


@corpus("compat32-parsed", generated=True)
def _() -> Message:
    return email.message_from_bytes(PARSED_MULTIPART)


@corpus("compat32-empty-message", generated=True)
def _() -> Message:
    return Message()


# Bodies ------------------------------------------------------------------------------------------


@corpus("text-ascii")
def _() -> Message:
    return _text("Line one.\nLine two.\n")


@corpus("text-long-lines")
def _() -> Message:
    return _text(("x" * 1200 + "\n") * 3)


@corpus("text-long-words-7bit")
def _() -> Message:
    return _text((LONG_WORDS + "\n") * 5)


@corpus("text-utf8-auto")
def _() -> Message:
    return _text(NON_ASCII + "\n")


@corpus("text-utf8-8bit")
def _() -> Message:
    return _text(NON_ASCII + "\n" + NON_ASCII + "\n", content={"cte": "8bit"})


@corpus("text-utf8-quoted-printable")
def _() -> Message:
    return _text(NON_ASCII * 5 + "\n", content={"cte": "quoted-printable"})


@corpus("text-utf8-base64")
def _() -> Message:
    return _text(NON_ASCII * 5 + "\n", content={"cte": "base64"})


@corpus("text-latin-1-8bit")
def _() -> Message:
    return _text("Café crème\n", content={"charset": "latin-1", "cte": "8bit"})


@corpus("text-html-subtype")
def _() -> Message:
    return _text("<p>Hi</p>\n", content={"subtype": "html"})


@corpus("text-dot-lines")
def _() -> Message:
    return _text(".\n..\n.leading dot\nmid.dot\n.\n")


@corpus("text-from-lines")
def _() -> Message:
    return _text("From the start\nFrom: not a header\n>From quoted\n")


@corpus("body-bare-lf")
def _() -> Message:
    return _raw("one\ntwo\nthree\n")


@corpus("body-bare-cr")
def _() -> Message:
    return _raw("one\rtwo\rthree\r")


@corpus("body-crlf")
def _() -> Message:
    return _raw("one\r\ntwo\r\nthree\r\n")


@corpus("body-mixed-line-breaks")
def _() -> Message:
    return _raw("a\rb\nc\r\nd\r\r\ne\n\rf")


@corpus("body-ends-in-cr")
def _() -> Message:
    return _raw("no final LF\r")


@corpus("body-no-final-line-break")
def _() -> Message:
    return _raw("no line break at the end")


@corpus("body-only-line-breaks")
def _() -> Message:
    return _raw("\n\r\n\r\n")


@corpus("body-empty")
def _() -> Message:
    return _raw("")


@corpus("body-payload-None")
def _() -> Message:
    return _email()


@corpus("body-8bit-bytes-payload")
def _() -> Message:
    message = _raw(b"caf\xe9 \xff\xfe\r\nbinary\n")
    message.replace_header("Content-Type", "text/plain; charset=latin-1")
    message["Content-Transfer-Encoding"] = "8bit"
    return message


@corpus("body-large")
def _() -> Message:
    return _raw("".join(f"line {index} .\r\n" for index in range(20_000)))


@corpus("body-non-text-maintype")
def _() -> Message:
    message = _email()
    message.set_content(BINARY, maintype="application", subtype="octet-stream")
    return message


@corpus("body-control-characters")
def _() -> Message:
    return _raw("form\x0cfeed\x0bvertical\x1cfile\x00nul\x7fdel\n")


@corpus("body-surrogates-without-charset")
def _() -> Message:
    return _raw(b"raw \xe9\xff bytes\n")


@corpus("empty-message")
def _() -> Message:
    return EmailMessage()


# Headers -----------------------------------------------------------------------------------------


@corpus("header-subject-long")
def _() -> Message:
    return _text("Body.\n", Subject="A long subject " + LONG_WORDS)


@corpus("header-subject-non-ascii")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("Subject", "Grüße")
    return message


@corpus("header-subject-non-ascii-long")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("Subject", NON_ASCII * 4)
    return message


@corpus("header-subject-encoded-word-given")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= and =?us-ascii?q?plain?=")
    return message


@corpus("header-display-names-non-ascii")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("From", "Jörg Müller <joerg@example.com>")
    message.replace_header("To", "Zoë <zoe@example.org>, 日本 <nihon@example.jp>")
    return message


@corpus("header-address-list")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header(
        "To",
        '"Doe, John" <john@example.org>, "Quote \\"Me\\"" <q@example.org>, '
        "jane@example.org (Jane Doe), Team: a@example.org, b@example.org;, "
        "Undisclosed recipients:;",
    )
    message["Cc"] = ", ".join(f"Person {index} <person{index}@example.org>" for index in range(12))
    return message


@corpus("header-address-extra-spaces")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("To", "  Bob   Smith   <  bob@example.org  >  ,   carol@example.org  ")
    return message


@corpus("header-value-leading-and-trailing-space")
def _() -> Message:
    return _text("Body.\n", X_Leading="   leading", X_Trailing="trailing   ", X_Tab="\ttabbed")


@corpus("header-value-with-inner-tab-and-invisible-characters")
def _() -> Message:
    # Not printable, so not written by the one-line shortcut: a TAB inside a
    # value, a zero-width space, a no-break space.
    message = _text("Body.\n", X_Tab_Inside="a\tb", X_Invisible="zero\u200bwidth")
    message.replace_header("Subject", "no\u00a0break")
    return message


@corpus("header-address-objects")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("From", Address("Alice Sender", "alice", "example.com"))
    message.replace_header(
        "To",
        [
            Address("Bob, the builder", addr_spec="bob@example.org"),
            Address("Zoë", "zoe", "example.org"),
            Group("Friends", [Address("Carol", "carol", "example.org"), Address(addr_spec="d@example.org")]),
        ],
    )
    return message


@corpus("header-date-datetime")
def _() -> Message:
    zone = datetime.timezone(datetime.timedelta(hours=2))
    return _text("Body.\n", Date=datetime.datetime(2024, 2, 29, 12, 30, 5, tzinfo=zone))


@corpus("header-date-naive-datetime")
def _() -> Message:
    return _text("Body.\n", Date=datetime.datetime(2024, 2, 29, 12, 30, 5))


@corpus("header-date-string")
def _() -> Message:
    return _text("Body.\n", Date="Thu, 29 Feb 2024 12:30:05 +0200")


@corpus("header-date-loose-string")
def _() -> Message:
    return _text("Body.\n", Date="29 Feb 2024 12:30 GMT")


@corpus("header-date-invalid")
def _() -> Message:
    return _text("Body.\n", Date="not a date")


@corpus("header-message-ids")
def _() -> Message:
    return _text(
        "Body.\n",
        Message_ID=make_msgid(domain="example.com"),
        In_Reply_To="<first@example.com>",
        References=" ".join(f"<reference{index}@example.com>" for index in range(8)),
    )


@corpus("header-message-id-invalid")
def _() -> Message:
    return _text("Body.\n", Message_ID="not an id")


@corpus("header-custom-x-headers")
def _() -> Message:
    return _text(
        "Body.\n",
        X_Mailer="syncsmtp tests",
        X_Priority="1 (Highest)",
        X_Semicolons="a; b; c=d",
        List_Unsubscribe="<mailto:unsubscribe@example.com>, <https://example.com/unsubscribe?id=1>",
    )


@corpus("header-name-long")
def _() -> Message:
    message = _text("Body.\n")
    message["X-" + "Long-Name" * 10] = "value"
    return message


@corpus("header-at-line-limit")
def _() -> Message:
    message = _text("Body.\n")
    message["X-Fit"] = "a" * (78 - len("X-Fit: "))
    message["X-Fit-Words"] = ("ab " * 40)[: 78 - len("X-Fit-Words: ")].rstrip() + "c"
    return message


@corpus("header-one-over-line-limit")
def _() -> Message:
    message = _text("Body.\n")
    message["X-Over"] = "a" * (79 - len("X-Over: "))
    message["X-Over-Words"] = ("ab " * 40)[: 79 - len("X-Over-Words: ")].rstrip() + "c"
    return message


@corpus("header-empty-value")
def _() -> Message:
    message = _text("Body.\n", X_Empty="")
    message.replace_header("Subject", "")
    return message


@corpus("header-repeated")
def _() -> Message:
    message = _text("Body.\n")
    for index in range(3):
        message["Received"] = (
            f"from host{index}.example.com by mx.example.org; Mon, 1 Jan 2024 10:00:0{index} +0000"
        )
    message["Comments"] = "first"
    message["Comments"] = "second"
    return message


@corpus("header-content-type-parameters")
def _() -> Message:
    message = _text("Body.\n")
    message.set_param("format", "flowed")
    message.set_param("delsp", "yes")
    message.set_param("x-long-parameter", "v" * 90)
    return message


@corpus("header-mime-version-and-cte")
def _() -> Message:
    message = _raw("Body.\n")
    message["MIME-Version"] = "1.0 (generated)"
    message["Content-Transfer-Encoding"] = "7bit"
    message["Content-Disposition"] = "inline"
    return message


@corpus("header-bcc")
def _() -> Message:
    message = _text("Body.\n", BCC="Hidden <hidden@example.org>", Cc="cc@example.org")
    message["Resent-From"] = "resender@example.com"
    message["Resent-Bcc"] = "resent-hidden@example.org"
    return message


@corpus("parsed-two-bcc")
def _() -> Message:
    return _parse(b"Bcc: one@example.org\r\nTo: to@example.org\r\nbcc: two@example.org\r\n\r\nBody.\r\n")


@corpus("header-name-with-line-break")
def _() -> Message:
    message = _text("Body.\n")
    message["X-Broken\nName"] = "value"
    message["X-Broken\rName"] = "value"
    return message


@corpus("header-address-non-ascii-mailbox")
def _() -> Message:
    message = _text("Body.\n")
    message.replace_header("To", Address("Jörg", "jörg", "exämple.com"))
    return message


@corpus("header-whitespace-only-value")
def _() -> Message:
    return _text("Body.\n", X_Spaces="   ")


@corpus("header-mime-content-headers")
def _() -> Message:
    message = _text("Body.\n")
    message["Content-ID"] = "<part1@example.com>"
    message["Content-Description"] = "Beschreibung: Übersicht"
    message["Content-Language"] = "de-DE"
    return message


@corpus("header-resent-block")
def _() -> Message:
    return _text(
        "Body.\n",
        Resent_Date="Fri, 1 Mar 2024 08:00:00 +0000",
        Resent_From="resender@example.com",
        Resent_To="new@example.org",
        Resent_Message_ID="<resent@example.com>",
        Reply_To="Team: a@example.org, b@example.org;",
        Sender="sender@example.com",
    )


@corpus("header-copied-from-another-message")
def _() -> Message:
    source = _text("Source.\n", Subject="Copied " + LONG_WORDS)
    message = _text("Body.\n")
    message.replace_header("Subject", source["Subject"])
    message["subject-copy"] = source["Subject"]
    return message


# Multiparts --------------------------------------------------------------------------------------


@corpus("multipart-alternative")
def _() -> Message:
    return _alternative()


@corpus("multipart-attachments")
def _() -> Message:
    message = _text("See the attachments.\n")
    message.add_attachment(b"plain bytes\n", maintype="application", subtype="octet-stream", filename="a.txt")
    message.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename="data.bin")
    message.add_attachment(BINARY, maintype="image", subtype="png", filename="Bild_Übersicht.png")
    message.add_attachment("Text attachment.\n", filename="notes " + "x" * 80 + ".txt")
    return message


@corpus("multipart-attachment-8bit")
def _() -> Message:
    message = _text("See the attachment.\n")
    message.add_attachment(b"caf\xc3\xa9\n", maintype="text", subtype="plain", cte="8bit")
    return message


@corpus("multipart-related-nested")
def _() -> Message:
    message = _alternative()
    _subpart(message, 1).add_related(BINARY, maintype="image", subtype="png", cid="<logo@example.com>")
    message.add_attachment(b"attachment", maintype="application", subtype="octet-stream", filename="a.bin")
    return message


@corpus("multipart-preamble-epilogue")
def _() -> Message:
    message = _alternative()
    message.preamble = "This is a MIME message.\nSecond line\r"
    message.epilogue = "Epilogue\rline two"
    return message


@corpus("multipart-empty-preamble-epilogue")
def _() -> Message:
    message = _alternative()
    message.preamble = ""
    message.epilogue = ""
    return message


@corpus("multipart-boundary-set")
def _() -> Message:
    message = _alternative()
    message.set_boundary("explicit-boundary-" + "b" * 50)
    return message


@corpus("multipart-no-parts")
def _() -> Message:
    message = _email()
    message["Content-Type"] = "multipart/mixed"
    return message


@corpus("multipart-part-ends-in-cr")
def _() -> Message:
    message = _email()
    message["Content-Type"] = "multipart/mixed"
    for body in ("ends in CR\r", "", "\r", "ends in LF\n"):
        part = EmailMessage()
        part["Content-Type"] = "text/plain"
        part.set_payload(body)
        message.attach(part)
    empty = EmailMessage()
    message.attach(empty)
    return message


@corpus("multipart-str-payload", generated=True)
def _() -> Message:
    message = _email()
    message["Content-Type"] = "multipart/mixed"
    message.set_payload("a str where parts should be\n")
    return message


@corpus("multipart-compat32-parts")
def _() -> Message:
    message: Message = _email()
    message["Content-Type"] = "multipart/mixed"
    message.attach(MIMEText("compat32 text\n"))
    message.attach(MIMEMultipart("alternative", _subparts=[MIMEText("a\n"), MIMEText("<b>a</b>\n", "html")]))
    return message


@corpus("multipart-part-with-own-policy")
def _() -> Message:
    message = _alternative()
    part = EmailMessage(policy=email.policy.default.clone(max_line_length=20))
    part["X-Part-Header"] = LONG_WORDS
    part.set_content("Part.\n")
    message.attach(part)
    return message


@corpus("multipart-signed", generated=True)
def _() -> Message:
    return _signed()


@corpus("multipart-signed-nested", generated=True)
def _() -> Message:
    message = _text("Outer.\n")
    message.make_mixed()
    message.attach(_signed())
    return message


@corpus("multipart-digest")
def _() -> Message:
    message = _email()
    message["Content-Type"] = "multipart/digest"
    for index in range(2):
        part = EmailMessage()
        part.set_content(f"Digest entry {index}.\n")
        message.attach(part)
    return message


@corpus("message-rfc822-attachment", generated=True)
def _() -> Message:
    message = _text("Forwarded.\n")
    message.add_attachment(_text("The original.\n", Subject="Original"))
    return message


@corpus("message-rfc822-with-multipart-without-boundary", generated=True)
def _() -> Message:
    inner = _text("The original.\n")
    inner.add_attachment(b"data", maintype="application", subtype="octet-stream")
    message = _text("Forwarded.\n")
    message.add_attachment(inner)
    return message


@corpus("message-delivery-status", generated=True)
def _() -> Message:
    return _parse(DELIVERY_STATUS)


@corpus("multipart-signed-empty", generated=True)
def _() -> Message:
    message = _email()
    message["Content-Type"] = "multipart/signed; protocol=application/pgp-signature"
    return message


@corpus("multipart-part-writes-own-headers", generated=True)
def _() -> Message:
    class OwnHeaders(EmailMessage):
        def _write_headers(self, generator: email.generator.Generator) -> None:
            generator.write("X-Own: headers\n\n")

    part = OwnHeaders()
    part.set_content("Part.\n")
    message = _alternative()
    message.attach(part)
    return message


@corpus("multipart-boundary-in-part-text")
def _() -> Message:
    message = _alternative()
    message.set_boundary("shared")
    _subpart(message, 0).set_content("--shared\n--shared--\n")
    return message


@corpus("multipart-deeply-nested")
def _() -> Message:
    message = _text("Level 0.\n")
    inner = message
    for level in range(1, 6):
        inner.add_attachment(f"Level {level}.\n")
        nested = EmailMessage()
        nested.set_content(f"Nested {level}.\n")
        nested.add_alternative(f"<p>Nested {level}.</p>\n", subtype="html")
        inner.attach(nested)
        inner = nested
    return message


@corpus("message-rfc822-compat32-inside", generated=True)
def _() -> Message:
    message = _text("Outer.\n")
    message.add_attachment(MIMEMultipart(_subparts=[MIMEText("Forwarded.\n")]))
    return message


@corpus("message-partial", generated=True)
def _() -> Message:
    message = _email()
    message["Content-Type"] = 'message/partial; id="abc@example.com"; number=1; total=2'
    message.set_payload("Subject: part one\n\nfirst half\n")
    return message


# Parsed messages ---------------------------------------------------------------------------------


@corpus("parsed-simple")
def _() -> Message:
    return _parse(PARSED_SIMPLE)


@corpus("parsed-lf-line-breaks")
def _() -> Message:
    return _parse(PARSED_SIMPLE.replace(b"\r\n", b"\n"))


@corpus("parsed-8bit-body")
def _() -> Message:
    return _parse(
        b"From: a@example.com\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n\xff invalid utf-8\r\n"
    )


@corpus("parsed-8bit-body-7bit-policy", generated=True)
def _() -> Message:
    return _parse(
        b"From: a@example.com\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
        email.policy.default.clone(cte_type="7bit"),
    )


@corpus("parsed-8bit-headers")
def _() -> Message:
    return _parse(b"From: J\xc3\xb6rg <j@example.com>\r\nSubject: Gr\xc3\xbc\xc3\x9fe \xff\r\n\r\nBody.\r\n")


@corpus("parsed-long-unfolded-header")
def _() -> Message:
    return _parse(b"Subject: " + LONG_WORDS.encode() + b"\r\nX-Short: ok\r\n\r\nBody.\r\n")


@corpus("parsed-multipart")
def _() -> Message:
    return _parse(PARSED_MULTIPART)


@corpus("parsed-multipart-SMTP-policy")
def _() -> Message:
    return _parse(PARSED_MULTIPART, email.policy.SMTP)


@corpus("parsed-multipart-missing-start-boundary", generated=True)
def _() -> Message:
    return _parse(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nNo boundary line here.\r\n')


@corpus("parsed-multipart-missing-end-boundary")
def _() -> Message:
    return _parse(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\n\r\nlast\r\n'
    )


@corpus("parsed-defective-headers")
def _() -> Message:
    return _parse(
        b"From: <<broken@@example.com\r\nTo: ,,, (unclosed\r\nDate: yesterday\r\n"
        b"Message-ID: no-angles\r\nContent-Type: text/\r\n\r\nBody.\r\n"
    )


@corpus("parsed-8bit-headers-7bit-policy")
def _() -> Message:
    return _parse(
        b"From: J\xc3\xb6rg <j@example.com>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nBody.\r\n",
        email.policy.default.clone(cte_type="7bit"),
    )


@corpus("parsed-control-characters-in-headers")
def _() -> Message:
    return _parse(b"Subject: form\x0cfeed\r\nX-VT: a\x0bb\x1cc\r\n\r\nBody.\r\n")


@corpus("parsed-multipart-8bit-preamble")
def _() -> Message:
    return _parse(PARSED_MULTIPART.replace(b"This is the preamble.", b"Pr\xc3\xa4ambel"))


@corpus("parsed-multipart-boundary-forms")
def _() -> Message:
    return _parse(
        b"Content-Type: multipart/mixed; boundary=unquoted\r\n\r\n"
        b"--unquoted\r\n"
        b'Content-Type: multipart/alternative; boundary="with spaces and (parens)  "\r\n\r\n'
        b"--with spaces and (parens)\r\n\r\none\r\n"
        b"--with spaces and (parens)--\r\n"
        b"--unquoted--\r\n"
    )


@corpus("parsed-message-rfc822", generated=True)
def _() -> Message:
    return _parse(
        b"From: a@example.com\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: inner@example.com\r\nSubject: inner\r\n\r\nInner body.\r\n"
    )


# Raising -----------------------------------------------------------------------------------------


@raising("non-ascii-str-payload")
def _() -> Message:
    return _raw("café")


@raising("non-ascii-str-payload-with-surrogates")
def _() -> Message:
    return _raw("café \udce9")


@raising("non-ascii-str-payload-in-part")
def _() -> Message:
    message = _alternative()
    _subpart(message, 0).set_payload("naïve")
    return message


@raising("non-ascii-preamble")
def _() -> Message:
    message = _alternative()
    message.preamble = "préambule"
    return message


@raising("non-ascii-epilogue")
def _() -> Message:
    message = _alternative()
    message.epilogue = "épilogue"
    return message


@raising("non-ascii-str-payload-compat32", generated=True)
def _() -> Message:
    message = Message()
    message.set_payload("café")
    return message


@raising("list-payload-under-text-type", generated=True)
def _() -> Message:
    message = _email()
    message["Content-Type"] = "text/plain"
    message.attach(EmailMessage())
    return message


@raising("multipart-str-part")
def _() -> Message:
    message = _alternative()
    message.attach(cast(Any, "a str where a part should be"))
    return message


@raising("compat32-multipart-str-part", generated=True)
def _() -> Message:
    message = MIMEMultipart()
    message.attach(cast(Any, "a str where a part should be"))
    return message


@raising("compat32-part-with-header-object")
def _() -> Message:
    part = MIMEText("Part.\n")
    part["Subject"] = cast(Any, email.header.Header("Grüße", "utf-8"))
    message: Message = _alternative()
    message.attach(part)
    return message


@raising("surrogates-without-charset-7bit-policy", generated=True)
def _() -> Message:
    return _raw(b"raw \xe9 bytes\n", email.policy.default.clone(cte_type="7bit"))


@raising("multipart-default-type-without-content-type")
def _() -> Message:
    message = _email()
    message.set_default_type("multipart/mixed")
    message.attach(_text("part\n"))
    return message


# Tests -------------------------------------------------------------------------------------------

OPTIONS = [
    pytest.param(False, frozenset(), id="plain"),
    pytest.param(True, frozenset(), id="utf8"),
    pytest.param(False, _SKIP_BCC, id="skip-bcc"),
]


def _cases(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.name) for case in cases]


@pytest.fixture
def generator_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Message]]:
    """The messages serialize() hands to BytesGenerator."""
    calls: list[Message] = []
    original = serialize_module._generate

    def recording(message: Message, policy: Any, skip: frozenset[str]) -> bytes:
        calls.append(message)
        return original(message, policy, skip)

    monkeypatch.setattr(serialize_module, "_generate", recording)
    yield calls


def test_corpus_names_are_unique() -> None:
    names = [case.name for case in CORPUS + RAISING]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("utf8", "skip"), OPTIONS)
@pytest.mark.parametrize("case", _cases(CORPUS))
def test_matches_generator(
    case: Case, utf8: bool, skip: frozenset[str], generator_calls: list[Message]
) -> None:
    message = case.build()
    before = state(message)
    try:
        parts = serialize(message, utf8=utf8, skip=skip)
    except Exception as exc:
        failure: Exception | None = exc
    else:
        failure = None
    assert state(message) == before, "serialize() changed the caller's message"

    try:
        expected = generate(message, utf8=utf8, skip=skip)
    except Exception as exc:
        assert utf8, f"the generator fails on this message: {exc!r}"
        assert type(failure) is type(exc)
        return
    if failure is not None:
        raise failure

    assert bool(generator_calls) == case.generated
    assert all(isinstance(part, bytes) or (isinstance(part, str) and part.isascii()) for part in parts)
    data = normalise(parts)
    assert name_boundaries(data) == name_boundaries(_NEWLINE.sub(b"\r\n", expected))
    assert sum(encoded_size(part) for part in parts) == len(data)
    for chunk_size in (5, 64 * 1024):
        wire = b"".join(iter_encoded(parts, chunk_size=chunk_size))
        assert wire == encode_data(data)
        assert unstuff(wire) == (data if data.endswith(b"\r\n") or not data else data + b"\r\n")


@pytest.mark.parametrize("case", _cases([case for case in CORPUS if lacks_boundary(case.build())]))
def test_matches_generator_with_boundaries_set(case: Case) -> None:
    """Byte for byte, once every multipart has a boundary of its own."""
    message = case.build()
    for index, part in enumerate(walk(message)):
        if needs_boundary(part):
            part.set_boundary(f"boundary-{index}")
    assert not lacks_boundary(message)
    assert normalise(serialize(message)) == _NEWLINE.sub(b"\r\n", generate(message))


@pytest.mark.parametrize(("utf8", "skip"), OPTIONS)
@pytest.mark.parametrize("case", _cases(RAISING))
def test_raises_like_generator(
    case: Case, utf8: bool, skip: frozenset[str], generator_calls: list[Message]
) -> None:
    message = case.build()
    before = state(message)
    with pytest.raises(Exception) as generated:
        generate(copy.deepcopy(message), utf8=utf8, skip=skip)
    with pytest.raises(type(generated.value)):
        serialize(message, utf8=utf8, skip=skip)
    assert state(message) == before
    if utf8 and not hasattr(message.policy, "utf8"):
        assert not generator_calls
    else:
        assert bool(generator_calls) == case.generated


@pytest.mark.parametrize("case", _cases([case for case in CORPUS if lacks_boundary(case.build())]))
def test_new_boundary_not_written_into_message(case: Case) -> None:
    message = case.build()
    serialize(message)
    serialize(message, skip=_SKIP_BCC)
    assert lacks_boundary(message)


def test_new_boundaries_are_random() -> None:
    message = _alternative()
    found = {match[0] for _ in range(5) for match in _RANDOM_BOUNDARY.finditer(normalise(serialize(message)))}
    assert len(found) == 5


def test_new_boundary_avoids_the_parts_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "randrange", lambda _stop: 42)
    base = "=" * 15 + "42".zfill(serialize_module._BOUNDARY_DIGITS) + "=="
    message = _email()
    message["Content-Type"] = "multipart/mixed"
    for body in (f"--{base}\n", f"text {base}.0 text\n"):
        part = EmailMessage()
        part.set_content(body)
        message.attach(part)
    data = normalise(serialize(message))
    assert f'boundary="{base}.1"'.encode() in data
    reparsed = _parse(data)
    assert isinstance(reparsed, EmailMessage)
    assert [part.get_content().replace("\r\n", "\n") for part in reparsed.iter_parts()] == [
        f"--{base}\n",
        f"text {base}.0 text\n",
    ]


def test_skip_leaves_out_top_level_headers_only() -> None:
    message = _text("Body.\n", Bcc="hidden@example.org")
    message.add_attachment(_text("Inner.\n", Bcc="inner-hidden@example.org"))
    data = normalise(serialize(message, skip=_SKIP_BCC))
    assert b"hidden@example.org" not in data.replace(b"inner-hidden", b"")
    assert b"Bcc: inner-hidden@example.org" in data
    assert message["Bcc"] == "hidden@example.org"


def test_utf8_writes_non_ascii_headers_raw() -> None:
    message = _text("Body.\n")
    message.replace_header("Subject", "Grüße")
    assert b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n" in normalise(serialize(message, utf8=True))
    assert b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" in normalise(serialize(message))


class _OwnPolicy(email.policy.EmailPolicy):
    """A policy subclass: serialize clones it for every message."""


@pytest.mark.parametrize("policy", [email.policy.default, email.policy.SMTP, _OwnPolicy()])
def test_wire_policy_follows_each_message_and_utf8(policy: Any) -> None:
    # The policy made for the wire is kept from one message to the next: it
    # must still follow the message's own policy and the utf8 switch.
    unicode_subject = _text("Body.\n", policy)
    unicode_subject.replace_header("Subject", "Grüße")
    plain = _text("Body.\n")
    for utf8 in (False, True, False, True):
        for message in (unicode_subject, plain):
            expected = _NEWLINE.sub(b"\r\n", generate(message, utf8=utf8))
            assert normalise(serialize(message, utf8=utf8)) == expected


def test_ascii_body_is_not_copied() -> None:
    body = "Body line.\n" * 1000
    message = _raw(body)
    assert any(part is body for part in serialize(message))


@pytest.mark.parametrize("name, value", [
    ("To", "bench@example.com"),
    ("To", "Some Body <sink@example.com>, other@example.org"),
    ("From", '"Quoted, Name" <a@example.com> (a comment (nested))'),
    ("Cc", "Friends: carol@example.org, d@example.org;, e@example.org"),
    ("Reply-To", "=?utf-8?q?caf=C3=A9?= <x@example.com>"),
    ("To", "  spaced   out  <a@example.com>  "),
    ("Sender", "obsolete@[127.0.0.1]"),
    ("Content-Type", 'text/plain; charset="utf-8"; name="a b.txt"'),
    ("Content-Disposition", "attachment; filename*=utf-8''caf%C3%A9.txt"),
])
def test_a_parse_tree_is_written_as_its_str(name: str, value: str) -> None:
    # The header writer walks a tree without str()'s generator per node; what
    # it writes must be exactly that str, whatever the nodes' own __str__ do.
    message = EmailMessage()
    message[name] = value
    tree = message[name]._parse_tree
    assert serialize_module._tree_text(tree) == str(tree)
