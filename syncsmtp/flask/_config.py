"""Flask-Mail's ``MAIL_*`` settings and ``SYNCSMTP`` to a :class:`~syncsmtp.Policy` (no SMTP here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .._settings import hide_password, policy_from_settings, syncsmtp_options
from ..client import DEFAULT_TIMEOUT, check_timeout
from ..policy import Policy

__all__ = ["DEFAULT_CONNECTIONS", "MailSettings", "read_settings"]

#: How many connections the app's Mailer keeps at most, unless SYNCSMTP says.
DEFAULT_CONNECTIONS = 4

_EXTRA_KEYS = frozenset({"url", "connections", "timeout"})


@dataclasses.dataclass(frozen=True)
class MailSettings:
    """The settings of one app, read once by ``init_app``: Flask-Mail's
    attributes, the :class:`~syncsmtp.Policy` they make, and the pool size
    and per-message deadline."""

    server: str
    port: int
    username: str | None
    password: str | None = dataclasses.field(repr=False)
    use_tls: bool
    use_ssl: bool
    default_sender: str | tuple[str, str] | None
    debug: int
    max_emails: int | None
    suppress: bool
    ascii_attachments: bool
    policy: Policy
    connections: int
    timeout: float


def read_settings(config: Mapping[str, Any], *, debug: bool, testing: bool) -> MailSettings:
    """The settings in ``config`` (``app.config``), with Flask-Mail's defaults.

    The password is kept as a :class:`~syncsmtp._settings.SecretStr`,
    whose repr hides it.

    Raises ValueError for settings that make no usable policy: MAIL_USE_TLS
    with MAIL_USE_SSL, credentials without TLS (unless SYNCSMTP allows
    plaintext AUTH), an unknown SYNCSMTP key, a bad URL or value."""
    extra = syncsmtp_options(config.get("SYNCSMTP"), _EXTRA_KEYS)
    url = extra.pop("url", None)
    connections = _positive_int(extra.pop("connections", DEFAULT_CONNECTIONS), "SYNCSMTP['connections']")
    timeout = _timeout(extra.pop("timeout", DEFAULT_TIMEOUT))
    if url:
        try:
            policy = _with_options(Policy.from_url(url), extra)
        except (TypeError, ValueError) as error:
            raise ValueError(f"SYNCSMTP['url'] does not make a valid syncsmtp policy: {error}") from None
        server, port = policy.host, policy.effective_port
        username, password = policy.username, hide_password(policy.password)
        use_tls, use_ssl = policy.tls == "starttls", policy.tls == "implicit"
    else:
        server = str(config.get("MAIL_SERVER", "127.0.0.1"))
        port = _port(config.get("MAIL_PORT", 25))
        # Hidden from reprs (debuggers show this frame's locals, MailState's attributes).
        username, password = config.get("MAIL_USERNAME"), hide_password(config.get("MAIL_PASSWORD"))
        use_tls, use_ssl = bool(config.get("MAIL_USE_TLS", False)), bool(config.get("MAIL_USE_SSL", False))
        policy = _policy_from_keys(server, port, username, password, use_tls, use_ssl, extra)
    max_emails = config.get("MAIL_MAX_EMAILS")
    return MailSettings(
        server=server, port=port, username=username, password=password, use_tls=use_tls, use_ssl=use_ssl,
        default_sender=config.get("MAIL_DEFAULT_SENDER"),
        debug=int(config.get("MAIL_DEBUG", debug)),
        max_emails=None if max_emails is None else _non_negative_int(max_emails, "MAIL_MAX_EMAILS"),
        suppress=bool(config.get("MAIL_SUPPRESS_SEND", testing)),
        ascii_attachments=bool(config.get("MAIL_ASCII_ATTACHMENTS", False)),
        policy=policy, connections=connections, timeout=timeout,
    )


def _policy_from_keys(
    server: str, port: int, username: str | None, password: str | None, use_tls: bool, use_ssl: bool,
    extra: Mapping[str, Any],
) -> Policy:
    if use_tls and use_ssl:
        raise ValueError(
            "MAIL_USE_TLS (STARTTLS) and MAIL_USE_SSL (TLS from the first byte) are mutually "
            "exclusive; set only one of them"
        )
    return policy_from_settings(
        host=server, port=port, username=username, password=password, use_tls=use_tls,
        use_ssl=use_ssl, options=extra, names="MAIL_*",
        plaintext_hint="Flask-Mail would send them in plaintext: set MAIL_USE_TLS = True for "
                       "STARTTLS or MAIL_USE_SSL = True",
    )


def _with_options(policy: Policy, options: Mapping[str, Any]) -> Policy:
    return policy.with_options(**options) if options else policy


def _port(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"MAIL_PORT must be a port number, not {value!r}") from None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def _non_negative_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ValueError(f"{name} must be a number of messages (0 or None: no limit), not {value!r}")
    return number


def _timeout(value: Any) -> float:
    try:
        return check_timeout(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"SYNCSMTP['timeout']: {error}") from None
