"""Numbered messages for the tests that send many (each to its own recipient,
its number in the subject), and the extensions the pipelining tests offer."""

from __future__ import annotations

import email.message

#: The test server's extensions for transactions over BDAT and over DATA.
MODES = {"bdat": ("PIPELINING", "CHUNKING", "8BITMIME"), "data": ("PIPELINING", "8BITMIME")}


def make_message(n: int) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = f"rcpt{n}@example.com"
    message["Subject"] = f"message {n}"
    message.set_content(f"body {n}\n")
    return message
