"""``syncsmtp send``: one message, from options or from a file, to one server."""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import email.utils
import getpass
import json
import mimetypes
import platform
import sys
from pathlib import Path
from typing import Any

from ..client import send
from ..errors import SMTPError
from ..message import prepare_message
from ..result import Reply, SendResult
from ._exit import ExitCode, UsageError, exit_code_for, hint_for
from ._options import Subcommands, add_color_option, add_server_options, build_policy
from ._output import Console, paragraph, printable

__all__ = ["add_parser"]

_EXAMPLES = """\
examples:
  # STARTTLS and AUTH, the password from an environment variable
  SMTP_PASSWORD=... syncsmtp send --url smtp+starttls://me@smtp.example.com:587 \\
      --password-env SMTP_PASSWORD --from me@example.com --to you@example.com \\
      --subject "hello" --body "It works." --transcript

  # the whole URL, password included, in the environment (never on the command line)
  export SYNCSMTP_URL='smtps://me:secret@smtp.example.com'
  syncsmtp send --from me@example.com --to you@example.com --attach report.pdf

  # a ready message from stdin, to a local relay without TLS
  syncsmtp send --host localhost --port 25 --tls none --message - < message.eml

  # to a local `syncsmtp serve`
  syncsmtp send --host 127.0.0.1 --port 1025 --tls none --to you@example.com
"""


def add_parser(commands: Subcommands) -> None:
    """Register ``send`` with the top-level parser's subcommands."""
    parser = commands.add_parser(
        "send",
        help="send a message (from options, or a ready one from a file)",
        description=paragraph(
            "Send one message and report the server's answer. The message comes from "
            "--from/--to/--subject/--body (and attachments), or ready-made from --message. "
            "Exit code 0 once the server has accepted it for at least one recipient."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    envelope = parser.add_argument_group("message")
    envelope.add_argument("--from", "-f", dest="sender", metavar="ADDRESS",
                          help="the sender (From, and MAIL FROM); default: the --user if it is "
                               "an address, else your login at this host")
    envelope.add_argument("--to", "-t", action="append", default=[], metavar="ADDRESS",
                          help="a recipient (repeat, or comma-separated)")
    envelope.add_argument("--cc", action="append", default=[], metavar="ADDRESS", help="a Cc recipient")
    envelope.add_argument("--bcc", action="append", default=[], metavar="ADDRESS",
                          help="a Bcc recipient (in the envelope only, not in the headers)")
    envelope.add_argument("--subject", metavar="TEXT", help='the subject (default: "test" and the date)')
    body = envelope.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="the text body")
    body.add_argument("--body-file", metavar="FILE", help="the text body from a UTF-8 file ('-': stdin)")
    envelope.add_argument("--html-file", metavar="FILE",
                          help="an HTML alternative of the body, from a UTF-8 file")
    envelope.add_argument("--attach", action="append", default=[], metavar="FILE",
                          help="attach a file (repeat for more; the type is guessed from the name)")
    envelope.add_argument("--header", action="append", default=[], metavar='"NAME: VALUE"',
                          help="add a header (repeat for more)")
    envelope.add_argument("--message", metavar="FILE",
                          help="send this ready RFC 5322 message ('-': stdin) instead; the envelope "
                               "comes from its headers unless --from/--to/--cc/--bcc are given")
    add_server_options(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--transcript", action="store_true",
                        help="print the SMTP conversation (credentials redacted)")
    output.add_argument("--json", action="store_true", help="print the result as JSON")
    output.add_argument("--quiet", "-q", action="store_true", help="print nothing when the message is sent")
    add_color_option(output)
    parser.set_defaults(run=run)


def _addresses(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _read_text(path: str, what: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {what} {path!r}: {error}") from None


def _read_bytes(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path!r}: {error}") from None


def _default_sender(user: str | None) -> str:
    if user and "@" in user:
        return user
    return f"{getpass.getuser()}@{platform.node() or 'localhost'}"


def _composed(args: argparse.Namespace, sender: str) -> email.message.EmailMessage:
    """The message the options describe."""
    message = email.message.EmailMessage()
    try:
        message["From"] = sender
        if args.to:
            message["To"] = ", ".join(_addresses(args.to))
        if args.cc:
            message["Cc"] = ", ".join(_addresses(args.cc))
        if args.bcc:
            message["Bcc"] = ", ".join(_addresses(args.bcc))  # the library keeps it out of the data
        message["Subject"] = args.subject if args.subject is not None else \
            f"test {email.utils.formatdate(localtime=True)}"
        for header in args.header:
            name, colon, value = header.partition(":")
            if not colon or not name.strip() or " " in name.strip():
                raise UsageError(f'--header must be "Name: value", not {header!r}')
            # As swaks does: a header given here replaces one of the same name.
            del message[name.strip()]
            message[name.strip()] = value.strip()
    except (ValueError, TypeError) as error:  # the email package's verdict on a header
        raise UsageError(f"bad header: {error}") from None
    if args.body_file is not None:
        text = _read_text(args.body_file, "the body file")
    elif args.body is not None:
        text = args.body
    else:
        text = "This is a test message sent by syncsmtp.\n"
    message.set_content(text if text.endswith("\n") else text + "\n")
    if args.html_file is not None:
        message.add_alternative(_read_text(args.html_file, "the HTML file"), subtype="html")
    for path in args.attach:
        data = _read_bytes(path, "the attachment")
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=Path(path).name)
    return message


def _without_bcc(data: bytes) -> bytes:
    """The message with its Bcc and Resent-Bcc fields (continuation lines too)
    taken out of the header block, and every other byte as it was."""
    lines = data.splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    for index, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):  # the end of the header block
            kept += lines[index:]
            break
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        dropping = name in (b"bcc", b"resent-bcc")
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def _message(args: argparse.Namespace, user: str | None) -> tuple[email.message.Message | bytes,
                                                                 str | None, list[str] | None]:
    """The message, with the envelope sender and recipients when they are not its headers'."""
    if args.message is None:
        if not (args.to or args.cc or args.bcc):
            raise UsageError("no recipient: give --to ADDRESS (or --cc / --bcc), or --message FILE")
        return _composed(args, args.sender or _default_sender(user)), None, None
    composing = [name for name in ("subject", "body", "body_file", "html_file")
                 if getattr(args, name) is not None] + [name for name in ("attach", "header")
                                                        if getattr(args, name)]
    if composing:
        options = ", ".join("--" + name.replace("_", "-") for name in composing)
        raise UsageError(f"--message sends a ready message; it cannot be combined with {options}")
    data = _read_bytes(args.message, "the message")
    if not data.strip():
        raise UsageError("the message is empty")
    # A ready message goes byte for byte (a DKIM signature must survive): its
    # headers give the envelope, as the library reads them, and only Bcc is taken out.
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    recipients = _addresses(args.to + args.cc + args.bcc) or None
    envelope = prepare_message(parsed, sender=args.sender, recipients=recipients)
    return _without_bcc(data), envelope.sender, list(envelope.recipients)


def _result_json(result: SendResult) -> dict[str, Any]:
    return {
        "ok": True,
        "exit_code": int(ExitCode.OK),
        "server": f"{result.host}:{result.port}",
        "accepted": list(result.accepted),
        "refused": {address: _reply_json(reply) for address, reply in result.refused.items()},
        "reply": _reply_json(result.reply),
        "message_id": result.message_id,
        "tls": None if result.tls is None else {"version": result.tls.version, "cipher": result.tls.cipher},
        "auth_mechanism": result.auth_mechanism,
        "elapsed": round(result.elapsed, 6),
        "transcript": list(result.transcript),
    }


def _reply_json(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text}


def _error_json(error: BaseException, code: ExitCode) -> dict[str, Any]:
    smtp_error = error if isinstance(error, SMTPError) else None
    return {
        "ok": False,
        "exit_code": int(code),
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "reply": _reply_json(smtp_error.reply if smtp_error else None),
            "stage": smtp_error.stage if smtp_error else None,
            "maybe_delivered": smtp_error.maybe_delivered if smtp_error else False,
        },
        "transcript": list(smtp_error.transcript) if smtp_error else [],
    }


def run(args: argparse.Namespace, console: Console) -> int:
    """Send the message; the exit code says how it went."""
    policy = build_policy(args, console)
    message, sender, recipients = _message(args, policy.username)
    try:
        result = send(message, policy, timeout=args.timeout, sender=sender, recipients=recipients)
    except SMTPError as error:
        code = exit_code_for(error)
        if args.json:
            console.out(json.dumps(_error_json(error, code), indent=2))
        elif args.transcript and error.transcript:
            console.transcript(error.transcript, stderr=True)
        console.error(f"{type(error).__name__}: {error}", hint_for(error))
        if error.maybe_delivered:
            console.err("the server may have received the message all the same: check before resending")
        return code
    if args.json:
        console.out(json.dumps(_result_json(result), indent=2))
    elif not args.quiet:
        if args.transcript:
            console.transcript(result.transcript)
            console.out()
        console.out(printable(str(result), keep_newlines=True))
    for address, reply in result.refused.items():
        console.err(f"{console.style('refused:', 'yellow', stderr=True)} {address}: "
                    f"{printable(str(reply))}")
    return ExitCode.OK
