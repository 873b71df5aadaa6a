"""For the tests that send many messages: numbered messages (each to its own
recipient, its number in the subject), the extensions the pipelining tests
offer, and senders run in threads of their own."""

from __future__ import annotations

import email.message
import threading
from collections.abc import Callable

#: The test server's extensions for transactions over BDAT and over DATA.
MODES = {"bdat": ("PIPELINING", "CHUNKING", "8BITMIME"), "data": ("PIPELINING", "8BITMIME")}


def make_message(n: int) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = f"rcpt{n}@example.com"
    message["Subject"] = f"message {n}"
    message.set_content(f"body {n}\n")
    return message


def run_concurrently(function: Callable[[int], None], count: int, seconds: float) -> None:
    """Call ``function(0)`` to ``function(count - 1)`` in threads of their own, and
    wait for them all, each at most ``seconds``."""
    threads = [threading.Thread(target=function, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds)
    assert not any(thread.is_alive() for thread in threads)
