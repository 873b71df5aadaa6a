"""``syncsmtp demo``: the whole client against ``serve``, with no configuration.

It starts the sink of ``syncsmtp serve`` in this process, on a free loopback
port, with STARTTLS (a generated certificate) and AUTH for a throwaway user,
sends one message to it through :func:`syncsmtp.send`, and shows the
transcript (password redacted) and where the sink saved the message.
"""

from __future__ import annotations

import argparse
import email.message
import secrets
import tempfile
from pathlib import Path

from ..client import send
from ..errors import SMTPError
from ._exit import ExitCode, exit_code_for, hint_for
from ._mailstore import open_store
from ._options import Subcommands, add_color_option
from ._output import Console, paragraph
from ._serve import Sink

__all__ = ["add_parser"]

_DEMO_USER = "demo"


def add_parser(commands: Subcommands) -> None:
    """Register ``demo`` with the top-level parser's subcommands."""
    parser = commands.add_parser(
        "demo",
        help="send a message through a local sink server and show the conversation",
        description=paragraph(
            "Start the sink of 'syncsmtp serve' on 127.0.0.1 with STARTTLS (a generated "
            "certificate) and AUTH, send one message to it through the whole client, and print "
            "the transcript (password redacted) and where the message was saved."
        ),
        epilog="examples:\n  syncsmtp demo\n  python -m syncsmtp demo --output ./demo-mail",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of the send (s)")
    parser.add_argument("--output", type=Path,
                        help="folder for the received message (default: a new temporary folder)")
    add_color_option(parser)
    parser.set_defaults(run=run)


def _message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "Demo Sender <sender@example.com>"
    message["To"] = "Demo Recipient <recipient@example.com>"
    message["Subject"] = "syncsmtp demo"
    message.set_content(
        "Hello from syncsmtp.\n\n"
        ".This line starts with a dot, which the client escapes on the wire.\n"
    )
    return message


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the demo; the exit code is that of the send."""
    password = secrets.token_urlsafe(16)  # a fresh throwaway credential each run
    console.add_secret(password)
    folder = args.output or Path(tempfile.mkdtemp(prefix="syncsmtp-demo-"))
    sink = Sink(console, open_store("eml", folder), host="127.0.0.1", port=0, tls="starttls",
                users={_DEMO_USER: password}).start()
    try:
        policy = sink.policy()
        console.out(f"sink server (syncsmtp serve) listening on {sink.address}: STARTTLS with a "
                    f"generated certificate, AUTH PLAIN/LOGIN/CRAM-MD5 for {_DEMO_USER!r}")
        console.out(f"policy: {policy!r}\n")
        try:
            result = send(_message(), policy, timeout=args.timeout)
        except SMTPError as error:
            console.transcript(error.transcript, stderr=True)
            console.error(f"send failed: {type(error).__name__}: {error}", hint_for(error))
            return exit_code_for(error)
        console.out("SMTP transcript (C: client, S: server):")
        console.transcript(result.transcript, indent="  ")
        console.out()
        console.out(str(result))
        console.out()
        console.out("the sink server received:")
        if not sink.handle_next(args.timeout):
            console.error("the sink server did not get the message")
            return ExitCode.UNEXPECTED
    finally:
        sink.stop()
    shown = "\n".join(result.transcript) + repr(policy) + str(result)
    if password in shown:  # the library's promise, checked on every run of the demo
        console.error("the password appeared in the output")
        return ExitCode.UNEXPECTED
    console.out(f"\nmessage saved to {sink.last_location}")
    return ExitCode.OK
