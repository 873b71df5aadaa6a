"""Exit codes: one per class of failure, the same for every command (defined only here)."""

from __future__ import annotations

import enum

from ..errors import (
    AuthError,
    AuthRequiredError,
    CertificateError,
    ConnectError,
    ConnectionLostError,
    EHLORequiredError,
    MessageError,
    RefusedError,
    SendTimeout,
    SMTPError,
    TLSError,
    TLSRequiredError,
)

__all__ = ["EXIT_CODES_HELP", "ExitCode", "UsageError", "exit_code_for", "hint_for"]


class ExitCode(enum.IntEnum):
    """What a ``syncsmtp`` process exits with."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONNECT = 3
    TLS = 4
    AUTH = 5
    REFUSED = 6
    PROTOCOL = 7
    INTERRUPTED = 130


_MEANINGS = {
    ExitCode.OK: "sent (send), everything checked out (check), stopped cleanly (serve)",
    ExitCode.UNEXPECTED: "an unexpected error (a bug: please report it)",
    ExitCode.USAGE: "usage: bad options, no password source, unreadable or invalid input",
    ExitCode.CONNECT: "cannot connect, timed out, or the connection was lost; serve: cannot listen",
    ExitCode.TLS: "TLS: STARTTLS not offered or refused, handshake failed, certificate did not verify",
    ExitCode.AUTH: "authentication failed or impossible (wrong credentials, no usable mechanism)",
    ExitCode.REFUSED: "the server refused the sender, every recipient, or the message",
    ExitCode.PROTOCOL: "another SMTP failure (EHLO refused, a malformed reply)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C (send, check)",
}

#: The exit code table, as ``--help`` shows it.
EXIT_CODES_HELP = "exit codes:\n" + "\n".join(
    f"  {int(code):>3}  {meaning}" for code, meaning in _MEANINGS.items()
)


class UsageError(Exception):
    """The command line, or the input it names, cannot be used (exit code 2)."""


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code of a failure (most specific class first)."""
    if isinstance(error, UsageError | MessageError):
        return ExitCode.USAGE
    if isinstance(error, ConnectError | SendTimeout | ConnectionLostError):
        return ExitCode.CONNECT
    if isinstance(error, TLSError):
        return ExitCode.TLS
    if isinstance(error, AuthError):
        return ExitCode.AUTH
    if isinstance(error, RefusedError):
        return ExitCode.REFUSED
    if isinstance(error, SMTPError):
        return ExitCode.PROTOCOL
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.UNEXPECTED


def hint_for(error: BaseException) -> str | None:
    """What to try on the command line: the library's messages name Policy
    arguments, which a shell user sets through these options."""
    if isinstance(error, CertificateError):
        return ("--ca-file FILE trusts a private CA; the host must be a name in the certificate; "
                "--insecure encrypts without verifying (anyone could be listening)")
    if isinstance(error, TLSRequiredError):
        return ("--tls implicit if the server expects TLS from the first byte (port 465); "
                "--tls opportunistic or --tls none to go on in plaintext")
    if isinstance(error, TLSError):
        return "check that --port and --tls match the server (465: implicit; 587 and 25: starttls)"
    if isinstance(error, AuthRequiredError):
        return "--auth-mechanism chooses the mechanisms; without --user, nothing is authenticated"
    if isinstance(error, SendTimeout):
        return "--timeout SECONDS allows a slow server more time"
    if isinstance(error, EHLORequiredError):
        return "--helo-fallback allows plain HELO (only without TLS and AUTH)"
    return None
