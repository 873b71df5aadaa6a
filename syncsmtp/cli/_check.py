"""``syncsmtp check``: what a server offers, without sending anything.

The probe is the library's own :func:`syncsmtp.check` (on the same session
code as a send); this module only calls it and presents its
:class:`~syncsmtp.CheckResult`.
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import TYPE_CHECKING, Any

from ..errors import SMTPError
from ._exit import ExitCode, exit_code_for, hint_for
from ._options import Subcommands, add_color_option, add_server_options, build_policy
from ._output import Console, paragraph, printable

if TYPE_CHECKING:
    from ..result import Capabilities, CertificateInfo, CheckResult

__all__ = ["add_parser"]

_EXAMPLES = """\
examples:
  # what a submission server offers, before and after STARTTLS
  syncsmtp check --host smtp.example.com --port 587

  # and whether these credentials log in (the password is prompted for)
  syncsmtp check --url smtp+starttls://me@smtp.example.com:587

  # implicit TLS, as JSON for a monitoring script
  syncsmtp check --url smtps://smtp.example.com --json | jq .certificate.not_after

  # a server with a private CA
  syncsmtp check --host mail.internal --ca-file internal-ca.pem
"""
# Fewer days than this before expiry, and the expiry date is shown as a warning.
_EXPIRY_WARNING_DAYS = 14


def add_parser(commands: Subcommands) -> None:
    """Register ``check`` with the top-level parser's subcommands."""
    parser = commands.add_parser(
        "check",
        help="probe a server: greeting, capabilities, TLS, certificate, AUTH; sends nothing",
        description=paragraph(
            "Connect, read the greeting and the EHLO capabilities, do STARTTLS as --tls says, "
            "read them again, show the TLS version, cipher and certificate (and whether it "
            "verifies), log in when a user is given, and QUIT without sending any mail. "
            "The exit code says what failed, as for send."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_server_options(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the findings as JSON")
    output.add_argument("--transcript", action="store_true",
                        help="print the SMTP conversation too (credentials redacted)")
    add_color_option(output)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Probe the server and report; the exit code is that of the first failure."""
    policy = build_policy(args, console)
    # The command line probes through the public function, as any program would.
    from .. import check

    try:
        result = check(policy, timeout=args.timeout)
    except SMTPError as error:  # only when the reactor itself did not answer in time
        console.error(f"{type(error).__name__}: {error}", hint_for(error))
        return exit_code_for(error)
    code = exit_code_for(result.error) if result.error is not None else ExitCode.OK
    if args.json:
        console.out(json.dumps(to_json(result, policy.username, code), indent=2))
    else:
        if args.transcript:
            console.transcript(result.transcript)
            console.out()
        console.table(_rows(result, policy.username, console))
    if result.error is not None:
        console.error(f"{type(result.error).__name__}: {result.error}", hint_for(result.error))
    return code


# -- the table ---------------------------------------------------------------------------------


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _size(limit: int | None) -> str:
    if limit is None:
        return "not announced"
    if limit == 0:
        return "announced, no fixed limit"
    return f"{limit} bytes ({limit / 1048576:.1f} MiB)"


def _capability_rows(title: str, capabilities: Capabilities) -> list[tuple[str, str]]:
    announced = printable(" ".join(
        key if value is None else f"{key} {value}" for key, value in capabilities.keywords.items()
    ))
    return [
        (title, announced or "(no extensions)"),
        ("  SIZE limit", _size(capabilities.size_limit)),
        ("  PIPELINING", _yes_no(capabilities.offers("PIPELINING"))),
        ("  SMTPUTF8", _yes_no(capabilities.offers("SMTPUTF8"))),
        ("  8BITMIME", _yes_no(capabilities.offers("8BITMIME"))),
        ("  STARTTLS", _yes_no(capabilities.offers("STARTTLS"))),
        ("  AUTH", " ".join(capabilities.auth_mechanisms) or "none"),
    ]


def _expiry(certificate: CertificateInfo, console: Console) -> str:
    days = certificate.days_left()
    when = certificate.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")
    if days < 0:
        return console.style(f"{when} (EXPIRED {-days:.0f} days ago)", "red", "bold")
    text = f"{when} (in {days:.0f} days)"
    return console.style(text, "yellow") if days < _EXPIRY_WARNING_DAYS else text


def _verified(result: CheckResult, console: Console) -> str:
    if result.certificate_verified is True:
        return console.style("yes", "green") + " (chain and host name)"
    if result.certificate_verified is False:
        return console.style("NO", "red", "bold") + " (shown from a second, unverified session)"
    return "not checked (--insecure)"


def _auth(result: CheckResult, username: str | None, console: Console) -> str:
    if not username:
        return "not tried (no --user)"
    if result.auth_mechanism:
        return console.style("succeeded", "green") + f" as {username!r} with {result.auth_mechanism}"
    if result.auth_attempted:
        return console.style("FAILED", "red", "bold") + f" for {username!r}"
    return "not tried (the session failed before AUTH)"


def _rows(result: CheckResult, username: str | None, console: Console) -> list[tuple[str, str]]:
    rows = [("server", f"{_address(result)} (tls: {result.tls_mode})")]
    # What the server chose to say goes through printable(): it must not drive the terminal.
    rows.append(("greeting", printable(str(result.greeting), keep_newlines=True) if result.greeting
                 else "none"))
    if result.capabilities_before_tls is not None:
        title = "EHLO before TLS" if result.tls or result.tls_mode != "none" else "EHLO"
        rows += _capability_rows(title, result.capabilities_before_tls)
    if result.tls is not None:
        rows.append(("TLS", f"{result.tls.version}, {result.tls.cipher}"))
    elif result.tls_mode == "none":
        rows.append(("TLS", "not used (--tls none)"))
    else:
        rows.append(("TLS", console.style("none", "red")))
    certificate = result.certificate
    if certificate is not None:
        rows += [
            ("certificate", printable(certificate.subject)),
            ("  issuer", printable(certificate.issuer)),
            ("  valid from", certificate.not_before.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("  valid until", _expiry(certificate, console)),
            ("  names", printable(", ".join(certificate.alt_names)) or "none"),
            ("  SHA-256", certificate.sha256),
            ("  verifies", _verified(result, console)),
        ]
    if result.capabilities_after_tls is not None:
        rows += _capability_rows("EHLO after TLS", result.capabilities_after_tls)
    rows.append(("AUTH", _auth(result, username, console)))
    rows.append(("elapsed", f"{result.elapsed * 1000:.1f} ms"))
    if result.error is None:
        rows.append(("result", console.style("OK", "green", "bold")))
    else:
        code = int(exit_code_for(result.error))
        rows.append(("result", console.style(f"FAILED ({type(result.error).__name__}, exit code {code})",
                                             "red", "bold")))
    return rows


def _address(result: CheckResult) -> str:
    host = f"[{result.host}]" if ":" in result.host else result.host
    return f"{host}:{result.port}"


# -- JSON ----------------------------------------------------------------------------------------


def _capabilities_json(capabilities: Capabilities | None) -> dict[str, Any] | None:
    if capabilities is None:
        return None
    return {
        "keywords": dict(capabilities.keywords),
        "size_limit": capabilities.size_limit,
        "pipelining": capabilities.offers("PIPELINING"),
        "smtputf8": capabilities.offers("SMTPUTF8"),
        "8bitmime": capabilities.offers("8BITMIME"),
        "starttls": capabilities.offers("STARTTLS"),
        "auth_mechanisms": list(capabilities.auth_mechanisms),
    }


def _time(value: datetime.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def to_json(result: CheckResult, username: str | None, code: ExitCode) -> dict[str, Any]:
    """The probe's findings as JSON-ready data (the password is never part of it)."""
    certificate = result.certificate
    error = result.error
    return {
        "ok": error is None,
        "exit_code": int(code),
        "server": {"host": result.host, "port": result.port, "tls_mode": result.tls_mode},
        "greeting": None if result.greeting is None else {
            "code": result.greeting.code, "enhanced": result.greeting.enhanced, "text": result.greeting.text,
        },
        "capabilities": {
            "before_tls": _capabilities_json(result.capabilities_before_tls),
            "after_tls": _capabilities_json(result.capabilities_after_tls),
        },
        "tls": None if result.tls is None else {"version": result.tls.version, "cipher": result.tls.cipher},
        "certificate": None if certificate is None else {
            "subject": certificate.subject,
            "issuer": certificate.issuer,
            "not_before": _time(certificate.not_before),
            "not_after": _time(certificate.not_after),
            "days_left": round(certificate.days_left(), 2),
            "alt_names": list(certificate.alt_names),
            "serial": certificate.serial,
            "sha256": certificate.sha256,
            "verified": result.certificate_verified,
        },
        "auth": {
            "username": username,
            "attempted": result.auth_attempted,
            "succeeded": result.auth_mechanism is not None,
            "mechanism": result.auth_mechanism,
        },
        "error": None if error is None else {
            "type": type(error).__name__,
            "message": str(error),
            "stage": error.stage,
            "reply": None if error.reply is None else {
                "code": error.reply.code, "enhanced": error.reply.enhanced, "text": error.reply.text,
            },
        },
        "elapsed": round(result.elapsed, 6),
        "transcript": list(result.transcript),
    }
