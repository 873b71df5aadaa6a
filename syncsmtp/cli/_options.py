"""Options shared by the commands: the server to talk to, and where its password comes from.

A password is never taken from the command line, where every user of the
machine can read it (``ps``, ``/proc/<pid>/cmdline``), and shells keep it in
their history. It comes from, in this order: the environment variable named
by ``--password-env``; ``SYNCSMTP_URL``, when that URL is also where the
server comes from; a prompt that does not echo, when stdin is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

from ..errors import InsecureTLSWarning
from ..policy import SUPPORTED_AUTH_MECHANISMS, Policy
from ._exit import UsageError
from ._output import COLOR_MODES, Console, paragraph

__all__ = [
    "URL_ENVIRONMENT",
    "Subcommands",
    "add_color_option",
    "add_server_options",
    "build_policy",
    "password_from_environment",
    "refuse_password_options",
]

#: What ``add_subparsers()`` returns, to which each command adds its parser.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: The environment variable that may hold a server URL with its password.
URL_ENVIRONMENT = "SYNCSMTP_URL"

_DEFAULT_TIMEOUT = 30.0
# Only names like these are repeated in an error: a mistyped option could put
# the password itself where the variable's name belongs.
_SHOWABLE_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _RefusePassword(argparse.Action):
    """``--password VALUE`` and look-alikes: refused, without repeating the value."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs="?", help=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        raise argparse.ArgumentError(
            self,
            "a password is never taken from the command line (other users can read it with ps); "
            f"use --password-env VAR, put the URL with its password in {URL_ENVIRONMENT}, "
            "or give --user alone to be prompted",
        )


def refuse_password_options(parser: argparse.ArgumentParser) -> None:
    """Add the password options people try (swaks calls it --auth-password), to refuse them."""
    parser.add_argument("--password", "--pass", "--auth-password", dest="_refused_password",
                        action=_RefusePassword)


def add_color_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--color``: styled output on a terminal (auto), always, or never."""
    parser.add_argument(
        "--color", "--colour", choices=COLOR_MODES, default="auto",
        help="colour the output: auto (on a terminal, unless NO_COLOR is set), always, never",
    )


def _mechanisms(value: str) -> list[str]:
    names = [name.strip().upper() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUPPORTED_AUTH_MECHANISMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mechanism {', '.join(unknown) or value!r}; "
            f"known: {', '.join(SUPPORTED_AUTH_MECHANISMS)}"
        )
    return names


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < number < 1e6:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {value!r}")
    return number


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {value!r}")
    return int(value)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which server to talk to and how (send and check)."""
    group = parser.add_argument_group(
        "server",
        paragraph(
            f"The server comes from --url, from --host, or from the {URL_ENVIRONMENT} environment "
            "variable (the only URL that may hold a password). Options given with a URL override "
            "its parts."
        ),
    )
    group.add_argument("--url", metavar="URL",
                       help="server as a URL, e.g. smtp+starttls://user@smtp.example.com:587 "
                            "(schemes: smtp, smtp+starttls, smtps, smtp+opportunistic, smtp+plain); "
                            "no password in it")
    group.add_argument("--host", "--server", "-s", metavar="HOST[:PORT]",
                       help="server host name or address, and the port after a colon as swaks takes it "
                            "([::1]:25 for IPv6)")
    group.add_argument("--port", "-p", type=_port, metavar="PORT",
                       help="port (default: 587, 465 with --tls implicit, 25 with --tls none)")
    group.add_argument("--tls", choices=("starttls", "implicit", "opportunistic", "none"),
                       help="starttls (the default: required), implicit (TLS from the first byte), "
                            "opportunistic (STARTTLS when offered), none (plaintext)")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the certificate or host name (still encrypts)")
    group.add_argument("--ca-file", metavar="FILE", help="trust the CA certificate(s) in this PEM file")
    group.add_argument("--client-cert", metavar="FILE", help="present this client certificate (PEM)")
    group.add_argument("--client-key", metavar="FILE", help="the key of --client-cert (PEM)")
    group.add_argument("--helo", metavar="NAME", help="the name to send in EHLO (default: this host's)")
    group.add_argument("--helo-fallback", action="store_true",
                       help="allow plain HELO when EHLO is refused (never with TLS or AUTH)")
    group.add_argument("--timeout", type=_positive, default=_DEFAULT_TIMEOUT, metavar="SECONDS",
                       help=f"one deadline for the whole conversation (default: {_DEFAULT_TIMEOUT:g})")
    auth = parser.add_argument_group("authentication")
    auth.add_argument("--user", "-u", "--auth-user", metavar="NAME", help="log in as this user")
    auth.add_argument("--password-env", metavar="VAR",
                      help="read the password from this environment variable")
    auth.add_argument("--auth-mechanism", type=_mechanisms, action="extend", metavar="MECH",
                      help=f"allowed mechanisms, most preferred first (repeat, or comma-separated; "
                           f"default: {', '.join(SUPPORTED_AUTH_MECHANISMS)})")
    auth.add_argument("--allow-plaintext-auth", action="store_true",
                      help="allow sending credentials without TLS (a trusted local relay only)")
    refuse_password_options(parser)


def password_from_environment(variable: str, environ: Mapping[str, str]) -> str:
    """The value of ``--password-env``'s variable; a usage error when it is unset."""
    value = environ.get(variable)
    if value is None:
        shown = f"{variable} " if _SHOWABLE_VARIABLE.match(variable) else ""
        raise UsageError(f"--password-env: the environment variable {shown}is not set")
    return value


def _prompt(username: str, address: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            f"a user name ({username!r}) is given but no password: use --password-env VAR or "
            f"{URL_ENVIRONMENT}; a prompt needs a terminal on stdin"
        )
    try:
        return getpass.getpass(f"password for {username} at {address}: ")
    except EOFError:
        raise UsageError("no password was entered") from None


def build_policy(args: argparse.Namespace, console: Console,
                 environ: Mapping[str, str] | None = None) -> Policy:
    """The :class:`~syncsmtp.Policy` the options describe, with the password
    from a safe source; every password found is registered with ``console``
    to be redacted. Raises :class:`UsageError`.

    A policy that does not verify the server says so in one line on stderr
    (instead of Python's warning, which names this module's source line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureTLSWarning)
        policy = _build_policy(args, console, environ)
    if not policy.verify and policy.tls != "none":
        console.err(
            f"{console.style('warning:', 'yellow', 'bold', stderr=True)} the certificate and host "
            f"name of {policy.address} are not verified (--insecure, or verify=no in the URL): "
            "the connection is encrypted, but anyone on the network path could pose as the server"
        )
    return policy


def _build_policy(args: argparse.Namespace, console: Console,
                  environ: Mapping[str, str] | None) -> Policy:
    environ = os.environ if environ is None else environ
    env_url = environ.get(URL_ENVIRONMENT)
    if env_url:
        # Redacted even when unused: an error may quote the environment.
        console.add_secret(_url_password(env_url))
    if args.url and args.host:
        raise UsageError("give the server with --url or with --host, not both")
    try:
        if args.url:
            if _url_password(args.url) is not None:
                raise UsageError(
                    "--url must not hold a password: other users can read the command line "
                    f"(ps); put the URL in the {URL_ENVIRONMENT} environment variable, or use "
                    "--password-env VAR"
                )
            base: Policy | None = Policy.from_url(args.url)
        elif args.host:
            base = None
        elif env_url:
            base = Policy.from_url(env_url)
        else:
            raise UsageError(
                f"no server: give --url URL or --host HOST, or set {URL_ENVIRONMENT}"
            )
        # A URL without a port leaves it to follow --tls (Policy.with_options sees to it).
        changes = _changes(args)
        if base is not None and "username" in changes and changes["username"] != base.username:
            # The URL's password belongs to the URL's user, never to another.
            changes["password"] = None
        if args.password_env:
            if not changes.get("username") and (base is None or not base.username):
                raise UsageError("--password-env needs a user name: add --user NAME")
            changes["password"] = password_from_environment(args.password_env, environ)
            console.add_secret(changes["password"])
        if base is not None:
            policy = base.with_options(**changes)
        else:
            host, port = _host_port(args.host)
            if port is not None:
                if args.port is not None:
                    raise UsageError("give the port in --host or with --port, not both")
                changes["port"] = port
            policy = Policy(host=host, **changes)
    except ValueError as error:
        raise UsageError(console.redact(str(error))) from None
    if policy.username and policy.password is None:
        password = _prompt(policy.username, policy.address)
        console.add_secret(password)
        try:
            policy = policy.with_options(password=password)
        except ValueError as error:
            raise UsageError(console.redact(str(error))) from None
    return policy


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def _host_port(value: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare IPv6 address has no port."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return host, None
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host, int(port)
    return value, None


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The Policy fields the options set explicitly."""
    changes: dict[str, Any] = {}
    if args.port is not None:
        changes["port"] = args.port
    if args.tls is not None:
        changes["tls"] = args.tls
    if args.insecure:
        changes["verify"] = False
    for option, name in (("ca_file", "ca_file"), ("client_cert", "client_cert"),
                         ("client_key", "client_key"), ("helo", "local_hostname"), ("user", "username")):
        value = getattr(args, option)
        if value is not None:
            changes[name] = value
    if args.auth_mechanism:
        changes["auth_mechanisms"] = tuple(dict.fromkeys(args.auth_mechanism))
    if args.allow_plaintext_auth:
        changes["allow_plaintext_auth"] = True
    if args.helo_fallback:
        changes["helo_fallback"] = True
    return changes
