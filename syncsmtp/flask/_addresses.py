"""Addresses as Flask-Mail takes them: strings or ``(name, address)`` tuples, turned into
the display name and address that headers and the envelope carry."""

from __future__ import annotations

import email.errors
import email.utils
import re
from collections.abc import Iterable
from email.headerregistry import Address

from ..errors import MessageError

__all__ = ["AddressInput", "address_header", "address_headers", "sender_text", "split_address"]

#: An address as Flask-Mail takes it: ``"Name <addr@example.com>"``, a bare
#: address, or a ``(name, address)`` tuple.
AddressInput = str | tuple[str, str]

# Characters that make a display name need quotes (those of email.utils.formataddr).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def sender_text(sender: AddressInput | None) -> str | None:
    """A sender as Flask-Mail keeps it: a ``(name, address)`` tuple becomes
    ``"name <address>"`` (the name quoted when it needs to be)."""
    if not isinstance(sender, tuple):
        return sender
    name, address = sender
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>" if name else address


def split_address(value: AddressInput) -> tuple[str, str]:
    """The display name and the address, with an international domain IDNA-encoded."""
    name, address = (str(value[0]), str(value[1])) if isinstance(value, tuple) \
        else email.utils.parseaddr(str(value))
    if not address.isascii() and "@" in address:
        local, _, domain = address.partition("@")
        try:
            address = f"{local}@{domain.encode('idna').decode('ascii')}"
        except UnicodeError as error:
            raise MessageError(f"the domain of {address!r} is not a valid host name: {error}") from None
    return name, address


def address_header(value: AddressInput) -> Address:
    """One address for a From or Reply-To header; MessageError when it is none."""
    name, address = split_address(value)
    try:
        if not address:
            raise ValueError("no address")
        if "@" not in address:
            # A local part alone, as smtplib (and so Flask-Mail) sends it: a
            # local relay adds its own domain. The envelope check refuses
            # what is unsafe in it.
            return Address(display_name=name, username=address, domain="")
        return Address(display_name=name, addr_spec=address)
    except (ValueError, email.errors.MessageError) as error:
        raise MessageError(f"{address or name!r} is not an email address ({error})") from None


def address_headers(values: Iterable[AddressInput]) -> tuple[Address, ...]:
    """The addresses for a To or Cc header, each (name and address) once."""
    unique = dict.fromkeys(split_address(value) for value in values)
    return tuple(address_header(pair) for pair in unique)
