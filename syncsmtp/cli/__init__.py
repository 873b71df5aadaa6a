"""The ``syncsmtp`` command line (also ``python -m syncsmtp``).

Commands, one module each: ``send`` (:mod:`._send`), ``check``
(:mod:`._check`), ``serve`` (:mod:`._serve`) and ``demo`` (:mod:`._demo`).
Shared here and in the small modules beside them: the server options and
password sources (:mod:`._options`), the exit codes (:mod:`._exit`), and
output with colour and redaction (:mod:`._output`). The commands drive the
library; the SMTP work is all in it.

It is built on :mod:`argparse`: syncsmtp's runtime dependencies are fixed,
and argparse does all this command line needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata

from .. import __version__
from ._exit import EXIT_CODES_HELP, ExitCode, UsageError, exit_code_for
from ._output import Console

__all__ = ["ExitCode", "main"]

_EXAMPLES = """\
examples:
  syncsmtp demo                      # the whole client against a local sink, no setup
  syncsmtp serve --tls starttls      # a development sink on 127.0.0.1:1025
  syncsmtp check --host smtp.example.com
  syncsmtp send --url smtp+starttls://me@smtp.example.com --to you@example.com

Passwords are never taken from the command line: use --password-env VAR, the
SYNCSMTP_URL environment variable, or the prompt. 'syncsmtp COMMAND --help' has more.

"""


def _version() -> str:
    try:
        twisted = metadata.version("twisted")
    except metadata.PackageNotFoundError:  # an unusual install; the version is only informative
        twisted = "unknown"
    return f"syncsmtp {__version__} (Twisted {twisted}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    from . import _check, _demo, _send, _serve

    parser = argparse.ArgumentParser(
        prog="syncsmtp",
        description="Send, check and receive SMTP mail: a blocking, secure-by-default SMTP client "
                    "and a development sink server.",
        epilog=_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", "-V", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (_send, _check, _serve, _demo):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the exit code table in ``--help``)."""
    args = build_parser().parse_args(argv)
    console = Console(getattr(args, "color", "auto"))
    try:
        status: int = args.run(args, console)
    except UsageError as error:
        console.error(str(error))
        return ExitCode.USAGE
    except KeyboardInterrupt:
        console.err("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, not even at exit's flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as error:
        code = exit_code_for(error)
        if code == ExitCode.UNEXPECTED:
            console.err(traceback.format_exc().rstrip())
        console.error(f"{type(error).__name__}: {error}")
        return code
    return int(status)
