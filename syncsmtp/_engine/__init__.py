"""The reactor side of sending: sessions on Twisted's ESMTP client, run only
in the reactor thread.

- :mod:`.session`: one session, set up on ``ESMTPClient`` (greeting, EHLO,
  STARTTLS in :mod:`.tls_steps`, AUTH in :mod:`.auth_steps`), then its
  transactions;
- :mod:`.transactions`: each message through the queue of outstanding
  commands (:mod:`.queue`): PIPELINING, BDAT, lock-step, messages back to
  back;
- :mod:`.base`: what the steps share: reading replies, outcomes;
- :mod:`.io`: the bytes in and out (written at once, or held while a read is
  handled and written together);
- :mod:`.capabilities`, :mod:`.transcript`, :mod:`.progress`: plain helpers;
- :mod:`.failures`: every error message, in one place;
- :mod:`.connect`: the connection, and a one-shot send (:func:`deliver`).

Every use of a Twisted private name is in :mod:`syncsmtp._twisted`.
"""

from __future__ import annotations

from .connect import connect_timeout, deliver, dial_address, open_session
from .progress import Progress
from .session import SMTPClientProtocol

__all__ = ["Progress", "SMTPClientProtocol", "connect_timeout", "deliver", "dial_address",
           "open_session"]
