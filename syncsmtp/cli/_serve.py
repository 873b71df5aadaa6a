"""``syncsmtp serve``: a development mail sink on loopback.

It is :class:`syncsmtp.testing.SMTPTestServer` (Twisted's ESMTP server in
syncsmtp's reactor thread), with AUTH for any credentials on request, and a
store behind it: the server hands each accepted message to a queue, and the
main thread prints its envelope and a summary and saves it. The main thread is also where SIGINT and SIGTERM
arrive; either stops the server (its port closed) and the command exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import email.message
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from ..testing._addresses import LOOPBACK_HINT, is_loopback_host
from ._exit import ExitCode, UsageError
from ._mailstore import FORMATS, MailStore, default_path, open_store
from ._options import Subcommands, add_color_option, password_from_environment, refuse_password_options
from ._output import Console, paragraph, printable

if TYPE_CHECKING:
    from ..policy import Policy
    from ..testing import ReceivedMessage
    from ..testing._sink import SinkServer

__all__ = ["ListenError", "Sink", "add_parser", "parse_listen"]

_DEFAULT_HOST = "127.0.0.1"
# MailHog's and Mailpit's port, so that applications set up for them need no change.
_DEFAULT_PORT = 1025
_DEFAULT_SIZE_LIMIT = 52428800
# How often the main thread looks at the stop flag while no message comes.
_POLL_SECONDS = 0.2
# How long connections in progress may take to finish when the sink stops.
_STOP_GRACE_SECONDS = 3.0

_EXAMPLES = """\
examples:
  # a plaintext sink on 127.0.0.1:1025, each message saved as an .eml in ./syncsmtp-mail
  syncsmtp serve

  # STARTTLS with a generated certificate, AUTH for one user, into a Maildir
  SINK_PASSWORD=secret syncsmtp serve --tls starttls --user dev --password-env SINK_PASSWORD \\
      --format maildir --output ./Maildir

  # any user name and password accepted, on IPv6 loopback, into an mbox; stop after 5 messages
  syncsmtp serve --listen [::1]:2525 --auth-any --format mbox --output mail.mbox --max-messages 5
"""


def add_parser(commands: Subcommands) -> None:
    """Register ``serve`` with the top-level parser's subcommands."""
    parser = commands.add_parser(
        "serve",
        help="run a development SMTP sink on loopback that saves what it receives",
        description=paragraph(
            "Accept mail on a loopback address, print each message's envelope and summary, "
            "and save it (.eml files, an mbox or a Maildir). Nothing is relayed. Optionally "
            "STARTTLS or implicit TLS with a generated certificate, and AUTH (PLAIN, LOGIN, "
            "CRAM-MD5) for one user, or for anyone (--auth-any). Ctrl-C or SIGTERM stops it."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--listen", "-l", default=f"{_DEFAULT_HOST}:{_DEFAULT_PORT}", metavar="[HOST:]PORT",
                        help=f"loopback address and port (default: {_DEFAULT_HOST}:{_DEFAULT_PORT}; "
                             "port 0 picks a free one)")
    parser.add_argument("--hostname", default="localhost", metavar="NAME",
                        help="the name in the greeting and the certificate (default: localhost)")
    parser.add_argument("--tls", choices=("none", "starttls", "implicit"), default="none",
                        help="none (the default), starttls (offered, with a generated certificate), "
                             "implicit (TLS from the first byte)")
    auth = parser.add_argument_group("authentication")
    auth.add_argument("--user", "-u", metavar="NAME", help="offer AUTH, for this user")
    auth.add_argument("--password-env", metavar="VAR",
                      help="the environment variable with --user's password (else it is prompted for)")
    auth.add_argument("--auth-any", action="store_true",
                      help="offer AUTH and accept any user name and password")
    auth.add_argument("--require-auth", action="store_true", help="refuse mail before AUTH")
    refuse_password_options(parser)
    storage = parser.add_argument_group("storage")
    storage.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                         help="eml: one file per message (the default); mbox: one file; maildir")
    storage.add_argument("--output", "-o", type=Path, metavar="PATH",
                         help=f"where to save (default: ./{default_path('eml')} or "
                              f"./{default_path('mbox')})")
    parser.add_argument("--size-limit", type=int, default=_DEFAULT_SIZE_LIMIT, metavar="BYTES",
                        help=f"the SIZE announced and enforced (default: {_DEFAULT_SIZE_LIMIT})")
    parser.add_argument("--max-messages", type=int, metavar="N",
                        help="stop after receiving N messages")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing per message")
    add_color_option(parser)
    parser.set_defaults(run=run)


def parse_listen(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); loopback only."""
    host, port_text = _DEFAULT_HOST, value
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise UsageError(f"--listen wants [HOST:]PORT with a port from 0 to 65535, not {value!r}")
    # The test server's own rule, checked here before a password prompt or a store.
    if not is_loopback_host(host):
        raise UsageError(
            f"--listen {printable(host)!r}: serve listens only on a loopback address ({LOOPBACK_HINT}); "
            "it accepts any mail, which is for development only"
        )
    if host.lower() == "localhost":
        host = _DEFAULT_HOST  # one address, where the name could mean IPv4 or IPv6
    return host, int(port_text)


def _summary(received: ReceivedMessage) -> tuple[str, str]:
    """The Subject, and the parts and attachments, in words."""
    try:
        parsed: email.message.EmailMessage = received.message
        subject = str(parsed.get("Subject", "(no subject)"))
        attachments = [part.get_filename() or "unnamed" for part in parsed.iter_attachments()]
        kind = parsed.get_content_type()
    except Exception as error:  # a malformed message is still saved as it came
        return "(unreadable headers)", f"cannot parse: {error}"
    details = kind
    if attachments:
        details += f", {len(attachments)} attachment{'s' if len(attachments) > 1 else ''}: " + \
            ", ".join(attachments)
    return subject, details


class ListenError(Exception):
    """The sink cannot listen where it was told (address in use, no IPv6)."""


class Sink:
    """A running sink: the test server, its store, and what it prints.

    Messages arrive in the reactor thread and are queued; :meth:`handle_next`
    (the caller's thread) prints and saves them one by one.
    """

    def __init__(
        self,
        console: Console,
        store: MailStore,
        *,
        host: str = _DEFAULT_HOST,
        port: int = _DEFAULT_PORT,
        tls: Literal["starttls", "implicit", "none"] = "none",
        users: Mapping[str, str] | None = None,
        accept_any: bool = False,
        require_auth: bool = False,
        hostname: str = "localhost",
        size_limit: int = _DEFAULT_SIZE_LIMIT,
        quiet: bool = False,
    ) -> None:
        from ..testing._sink import SinkServer

        self.console = console
        self.store = store
        self.quiet = quiet
        self.received = 0
        #: Where the last message handled was saved.
        self.last_location = ""
        self._queue: queue.Queue[ReceivedMessage] = queue.Queue()
        self.server: SinkServer = SinkServer(
            tls=tls,
            users=users,
            accept_any_credentials=accept_any,
            # On plaintext loopback, AUTH is offered all the same: there is no TLS to wait for.
            auth_requires_tls=tls != "none",
            require_auth=require_auth,
            extensions=("PIPELINING", "8BITMIME", f"SIZE {size_limit}"),
            host=host,
            port=port,
            hostname=hostname,
            on_message=self._queue.put,
        )

    def start(self) -> Sink:
        """Start listening; :class:`ListenError` when the address cannot be taken."""
        try:
            self.server.start()
        except OSError as error:
            raise ListenError(str(error)) from None
        return self

    def stop(self) -> None:
        """Stop listening, give open connections a moment to finish (the reply
        to a message just received must reach its sender), close the rest, and
        handle what was queued."""
        self.server.stop(grace=_STOP_GRACE_SECONDS)
        while self.handle_next(0):
            pass
        self.store.close()

    @property
    def address(self) -> str:
        """``host:port`` it listens on (``[host]:port`` for IPv6)."""
        host = self.server.host
        return f"[{host}]:{self.server.port}" if ":" in host else f"{host}:{self.server.port}"

    def policy(self, **overrides: Any) -> Policy:
        """A client policy for this sink (trusting its CA)."""
        return self.server.policy(**overrides)

    def handle_next(self, timeout: float) -> bool:
        """Print and save the next message, waiting up to ``timeout`` seconds; False when none came."""
        try:
            received = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return False
        self.received += 1
        try:
            location = self.store.save(received)
        except OSError as error:
            # The server has accepted it already; say so, and go on serving.
            location = f"NOT SAVED: {error}"
            # Console.error escapes what the sender chose.
            self.console.error(f"message {self.received} from <{received.sender}> was not saved: {error}")
        # The server keeps an outbox for tests; a long-running sink has no use for it.
        self.server.clear()
        if not self.quiet:
            self._print(received, location)
        self.last_location = location
        return True

    def _print(self, received: ReceivedMessage, location: str) -> None:
        # Everything but the count, the time and the sizes comes from the client:
        # escaped before it is styled, so only the styles' own ESC reach the terminal.
        console = self.console
        subject, details = (printable(text) for text in _summary(received))
        when = datetime.datetime.now().strftime("%H:%M:%S")
        recipients = printable(", ".join(f"<{r}>" for r in received.recipients))
        security = "TLS" if received.tls else "plaintext"
        if received.auth_user is not None:
            security += f", AUTH as {received.auth_user!r}"  # repr escapes as printable() does
        number = console.style(f"[{self.received}]", "bold")
        sender = console.style(printable(f"<{received.sender}>"), "cyan")
        console.out(f"{number} {when} from {sender} to {console.style(recipients, 'cyan')}")
        console.out(f"    Subject: {subject}")
        console.out(f"    {len(received.data)} bytes, {details}; {security}, EHLO {printable(received.helo)}")
        console.out(f"    saved to {printable(location)}")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of killing the process, for the duration."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _serve_password(args: argparse.Namespace) -> dict[str, str] | None:
    if args.user is None:
        if args.password_env:
            raise UsageError("--password-env needs --user NAME")
        return None
    if args.auth_any:
        raise UsageError("--auth-any accepts anyone: it does not go with --user")
    if args.password_env:
        import os

        return {args.user: password_from_environment(args.password_env, os.environ)}
    import getpass
    import sys

    if not sys.stdin.isatty():
        raise UsageError("--user needs a password: use --password-env VAR (a prompt needs a terminal)")
    try:
        return {args.user: getpass.getpass(f"password to accept for {args.user}: ")}
    except EOFError:
        raise UsageError("no password was entered") from None


def run(args: argparse.Namespace, console: Console) -> int:
    """Serve until SIGINT or SIGTERM (or --max-messages); exit 0 when stopped so."""
    host, port = parse_listen(args.listen)
    users = _serve_password(args)
    for password in (users or {}).values():
        console.add_secret(password)
    if args.require_auth and not (users or args.auth_any):
        raise UsageError("--require-auth needs --user or --auth-any")
    if args.size_limit < 0 or (args.max_messages is not None and args.max_messages < 1):
        raise UsageError("--size-limit must be 0 or more, --max-messages 1 or more")
    store = open_store(args.format, args.output)
    sink = Sink(
        console, store, host=host, port=port, tls=args.tls, users=users, accept_any=args.auth_any,
        require_auth=args.require_auth, hostname=args.hostname, size_limit=args.size_limit,
        quiet=args.quiet,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            sink.start()
        except ListenError as error:
            console.error(str(error), "choose another port with --listen, or port 0 for a free one")
            store.close()
            return ExitCode.CONNECT
        try:
            _announce(sink, args, users, console)
            while not stop.is_set():
                if args.max_messages is not None and sink.received >= args.max_messages:
                    break
                sink.handle_next(_POLL_SECONDS)
        finally:
            sink.stop()
    reason = "interrupted" if stop.is_set() else f"received {args.max_messages} messages"
    console.out(f"stopped ({reason}): {sink.received} message{'s' if sink.received != 1 else ''} "
                f"saved to {store.path}")
    return ExitCode.OK


def _announce(sink: Sink, args: argparse.Namespace, users: Mapping[str, str] | None,
              console: Console) -> None:
    features = {"none": "plaintext", "starttls": "STARTTLS offered", "implicit": "implicit TLS"}[args.tls]
    if users:
        features += f"; AUTH PLAIN LOGIN CRAM-MD5 for {', '.join(repr(user) for user in users)}"
    elif args.auth_any:
        features += "; AUTH PLAIN LOGIN CRAM-MD5 for any user and password"
    if args.require_auth:
        features += ", required"
    console.out(f"syncsmtp serve: listening on {console.style(sink.address, 'bold')} ({features})")
    if sink.server.ca_file:
        console.out(f"  CA certificate: {sink.server.ca_file} (clients trust it with --ca-file)")
    console.out(f"  saving {sink.store.describe()}")
    port = sink.server.port
    host = sink.server.host
    tls = {"none": "none", "starttls": "starttls", "implicit": "implicit"}[args.tls]
    trust = f" --ca-file {sink.server.ca_file}" if sink.server.ca_file else ""
    login = f" --user {next(iter(users))}" if users else (" --user anyone" if args.auth_any else "")
    plaintext = " --allow-plaintext-auth" if login and tls == "none" else ""
    console.out(f"  try: syncsmtp send --host {host} --port {port} --tls {tls}{trust}{login}{plaintext} "
                "--to someone@example.com")
    console.out("  Ctrl-C stops it." + ("" if args.max_messages is None else
                                         f" It stops by itself after {args.max_messages} messages."))
