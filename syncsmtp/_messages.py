"""The wording of validation errors (plain functions: no Twisted here).

Every :class:`ValueError` or :class:`TypeError` that syncsmtp raises for a bad
argument, before any connection, takes its message from here, so that each
one names the parameter it is about (``idle_timeout``, not ``timeout``), says
what was expected, and reads like the others. The modules that validate
(:mod:`~syncsmtp.policy`, :mod:`~syncsmtp.client`, :mod:`~syncsmtp.mailer`)
decide *whether* a value is acceptable; this module only says *what to tell
the caller*.

Failures of an SMTP conversation are worded elsewhere, in one module too:
``syncsmtp._engine.failures``.

A value is quoted with ``repr()``, except where it may be a secret (a user
name or password, a URL's user information): then only its type is named.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__: list[str] = []

_MAX_SHOWN = 80


def _shown(value: object) -> str:
    """``repr(value)``, cut short when long."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def must_be(where: str, name: str, expected: str, value: object, *, secret: bool = False) -> str:
    """``"<where> <name> must be <expected>, not <value>"``: the usual message.

    ``where`` is the call or class (``"Policy"``, ``"Mailer.send_many()"``, or
    ``""``), ``name`` the parameter. With ``secret`` (a user name, a password, a URL
    that may hold one), the value is not shown, only its type."""
    shown = f"the {type(value).__name__} given (not shown)" if secret else _shown(value)
    return f"{where} {name} must be {expected}, not {shown}".lstrip()


def one_of(where: str, name: str, choices: Iterable[str], value: object) -> str:
    """A parameter that takes one of a few words."""
    return must_be(where, name, "one of " + ", ".join(repr(choice) for choice in choices), value)


# -- numbers -------------------------------------------------------------------------------------


def seconds(where: str, name: str, value: object) -> str:
    """A time-out, delay or other duration that must be positive and finite."""
    return must_be(where, name, "a positive, finite number of seconds", value)


def optional_seconds(where: str, name: str, value: object) -> str:
    """A limit in seconds that may also be None (no limit)."""
    return must_be(where, name, "a positive, finite number of seconds or None", value)


def positive_integer(where: str, name: str, value: object) -> str:
    """A count of one or more."""
    return must_be(where, name, "a positive integer", value)


def non_negative_integer(where: str, name: str, value: object) -> str:
    """A count of zero or more."""
    return must_be(where, name, "a non-negative integer", value)


def flag(where: str, name: str, value: object, *, optional: bool = False) -> str:
    """A switch that takes True or False (or None, with ``optional``)."""
    return must_be(where, name, "True, False or None" if optional else "True or False", value)


# -- the Policy ----------------------------------------------------------------------------------


def policy_type(where: str, value: object) -> str:
    """``policy`` was not a Policy."""
    return f"{where} policy must be a syncsmtp.Policy, not {type(value).__name__}".lstrip()


def credentials_without_username() -> str:
    """A password, but no user name to go with it."""
    return "Policy password is given without a username; give both, or neither"


def require_auth_without_username() -> str:
    """``require_auth=True`` with nobody to log in as."""
    return "Policy require_auth=True needs a username and password"


def plaintext_credentials() -> str:
    """Credentials on a policy that never encrypts."""
    return (
        "Policy tls='none' with a username would send the password in plaintext; "
        "use tls='starttls' or 'implicit', or set allow_plaintext_auth=True "
        "for a trusted local relay"
    )


def auth_mechanisms(known: Iterable[str], value: object) -> str:
    """``auth_mechanisms`` that name no mechanism syncsmtp has."""
    return must_be("Policy", "auth_mechanisms", f"a sequence of some of {', '.join(known)}", value)


def not_a_file(name: str, value: object) -> str:
    """A PEM file option that names no readable file."""
    return f"Policy {name} {_shown(value)} is not a readable file"


def client_key_without_cert() -> str:
    """A client key, but no certificate to go with it."""
    return "Policy client_key needs a client_cert"


# -- URLs ----------------------------------------------------------------------------------------
# Never quote a URL whole: its user information may hold a password.


def url_userinfo() -> str:
    """A URL whose user name or password holds a character that ends it early."""
    return (
        "Policy.from_url() url: its user name or password has a character that must be "
        "percent-encoded (such as / ? # @ or a space: write %2F %3F %23 %40 %20), "
        "or the URL is not of the form scheme://user:password@host:port"
    )


def url_port() -> str:
    """A URL whose port is not a port."""
    return "Policy.from_url() url has a port that is not a number from 1 to 65535"


def url_scheme(schemes: Iterable[str], scheme: str) -> str:
    """A URL scheme that is not an SMTP one."""
    return f"Policy.from_url() url scheme must be one of {', '.join(schemes)}, not {_shown(scheme)}"


def url_host() -> str:
    """A URL with nothing after ``//``."""
    return "Policy.from_url() url has no host"


def url_option(key: str, known: Iterable[str]) -> str:
    """A query parameter that is no Policy option."""
    return f"Policy.from_url() url option {_shown(key)} is unknown; known: {', '.join(known)}"


def url_flag(key: str, value: str) -> str:
    """A query parameter that should be true or false."""
    return f"Policy.from_url() url option {key} must be true or false, not {_shown(value)}"


def url_number(key: str, value: str) -> str:
    """A query parameter that should be a number (of seconds)."""
    return f"Policy.from_url() url option {key} must be a number of seconds, not {_shown(value)}"


# -- sending -------------------------------------------------------------------------------------


def messages_not_iterable(where: str, value: object) -> str:
    """``send_many`` given one message, or something that is no iterable."""
    return (
        f"{where} messages must be an iterable of messages (a list, a generator, ...), "
        f"not {type(value).__name__}; send() sends one message"
    )


def batch_item(value: object) -> str:
    """An item of ``send_many`` that is no message and no (message, sender, recipients)."""
    return (
        "Mailer.send_many() messages: each item must be a message (EmailMessage, bytes or str), "
        f"a syncsmtp.Outgoing or a (message, sender, recipients) tuple, not {type(value).__name__}"
        + (f" of {len(value)} items" if isinstance(value, tuple) else "")
    )


def mailer_closed() -> str:
    """A Mailer used after :meth:`~syncsmtp.Mailer.close`."""
    return "this Mailer is closed; create a new one to send more"


# -- delivery options (DSN, REQUIRETLS) ------------------------------------------------------------


def dsn_notify(value: object) -> str:
    """A NOTIFY that is not some of SUCCESS, FAILURE, DELAY, or NEVER alone."""
    return must_be("DSN", "notify", "some of 'SUCCESS', 'FAILURE', 'DELAY' (each once), "
                   "or 'NEVER' alone", value)


def dsn_ret(choices: Iterable[str], value: object) -> str:
    """A RET that is neither FULL nor HDRS."""
    return must_be("DSN", "ret", "None or one of " + ", ".join(repr(choice) for choice in choices),
                   value)


def dsn_envid(limit: int, value: object) -> str:
    """An ENVID that is no printable ASCII text, or too long."""
    return must_be("DSN", "envid", f"None or printable ASCII text of at most {limit} characters "
                   "once xtext-encoded (+, = and space count three each)", value)


def require_tls_with_header() -> str:
    """REQUIRETLS asked for a message that says ``TLS-Required: No``."""
    return ("require_tls=True, but the message has a 'TLS-Required: No' header, which asks for "
            "the opposite (RFC 8689); remove the header or drop require_tls")
