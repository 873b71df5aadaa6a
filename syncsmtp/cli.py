"""The ``syncsmtp`` command line (``python -m syncsmtp``).

``demo`` is the no-configuration tour: it starts the test server on loopback
with STARTTLS and AUTH, sends one message through the whole pipeline, and
shows the conversation (password redacted) and where the message landed.
"""

from __future__ import annotations

import argparse
import email.message
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .client import send
from .errors import SMTPError

__all__ = ["main"]

_DEMO_USER = "demo"
_DEMO_PASSWORD = "demo-password"  # noqa: S105 (a throwaway credential of the local demo server)


def _demo(args: argparse.Namespace) -> int:
    from .testing import SMTPTestServer

    message = email.message.EmailMessage()
    message["From"] = "Demo Sender <sender@example.com>"
    message["To"] = "Demo Recipient <recipient@example.com>"
    message["Subject"] = "syncsmtp demo"
    message.set_content(
        "Hello from syncsmtp.\n\n"
        ".This line starts with a dot, which the client escapes on the wire.\n"
    )
    with SMTPTestServer(tls="starttls", users={_DEMO_USER: _DEMO_PASSWORD}) as server:
        policy = server.policy()
        print(f"test server listening on {policy.address} (STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5)")
        print(f"policy: {policy!r}\n")
        try:
            result = send(message, policy, timeout=args.timeout)
        except SMTPError as error:
            print("\n".join(error.transcript), file=sys.stderr)
            print(f"\nsend failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        print("SMTP transcript (C: client, S: server):")
        print("\n".join(f"  {line}" for line in result.transcript))
        print()
        print(result)
        server.wait_for(1)
        received = server.outbox[0]
    folder = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="syncsmtp-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "message.eml"
    path.write_bytes(received.data)
    print(
        f"\nthe server received {len(received.data)} bytes from {received.sender} for "
        f"{', '.join(received.recipients)} over {'TLS' if received.tls else 'plaintext'}, "
        f"authenticated as {received.auth_user!r}"
    )
    print(f"message saved to {path}")
    if _DEMO_PASSWORD in "\n".join(result.transcript) + repr(policy) + str(result):
        print("error: the password appeared in the output", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncsmtp",
        description="A blocking, secure-by-default SMTP client.",
    )
    parser.add_argument("--version", action="version", version=f"syncsmtp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="send a message through a local test server and show the conversation",
        description=(
            "Start syncsmtp's test SMTP server on 127.0.0.1 with STARTTLS (a generated "
            "certificate) and AUTH, send one message to it through the whole client, and print "
            "the transcript (password redacted) and where the message was saved."
        ),
        epilog="example: python -m syncsmtp demo --output ./demo-mail",
    )
    demo.add_argument("--timeout", type=float, default=30.0, help="deadline of the send (s)")
    demo.add_argument("--output", help="folder for the received message (default: a new temp dir)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status
