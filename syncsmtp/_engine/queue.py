"""The command queue under a session's transactions: every command written
pushes what its reply will mean; replies are matched in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SMTPError
from ..policy import Policy
from ..result import SendResult
from .capabilities import Capabilities
from .producer import DataProducer
from .transcript import Lines, Transcript

if TYPE_CHECKING:
    from .transactions import Transaction

__all__ = ["CommandQueue", "Handler", "Session"]

Handler = Callable[[int, bytes], None]


class Session(Protocol):
    """What the transactions need of the session they run on."""

    policy: Policy
    conversation: Transcript
    capabilities: Capabilities
    tls: Any
    authenticated_with: str | None
    transport: Any

    def write(self, data: bytes) -> None: ...
    def flush_held(self) -> None: ...
    def more_to_read(self) -> bool: ...
    def now(self) -> float: ...
    def transaction_over(self, transaction: Transaction, outcome: SendResult | SMTPError,
                         fatal: bool) -> None: ...
    def content_written(self) -> None: ...
    def data_moved(self) -> None: ...


class CommandQueue:
    """Commands written and the replies they wait for, in order."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # Each reply awaited: what handles it, and the transcript of the
        # message it belongs to (None: the session's own).
        self._expected: deque[tuple[Handler, Lines | None]] = deque()
        self._producer: DataProducer | None = None
        #: Set after a failed transaction: the next one starts with RSET.
        self.needs_rset = False
        #: True when the QUIT of a one-shot send went out with its message.
        self.quit_sent = False

    # -- the queue ----------------------------------------------------------------------------

    def reply(self, code: int, text: bytes) -> bool:
        """Hand a reply to the command it answers; False when none was waiting."""
        if not self._expected:
            return False
        handler, _ = self._expected.popleft()
        handler(code, text)
        return True

    def _expect(self, handler: Handler, owner: Lines | None) -> None:
        """One more reply to wait for, to a command already written."""
        self._expected.append((handler, owner))

    @property
    def pending(self) -> int:
        """How many replies are still awaited."""
        return len(self._expected)

    @property
    def answering(self) -> Lines | None:
        """The transcript of the message the next reply belongs to (None: the session's own)."""
        return self._expected[0][1] if self._expected else None

    def _send(self, lines: list[bytes], handlers: list[Handler], secret: bytes = b"",
              owner: Lines | None = None) -> None:
        """Write commands in one write, their replies expected in order; ``secret``
        (an AUTH command) goes first and is redacted in the transcript. The
        commands and their replies go to the message transcript ``owner``;
        AUTH's to the session's."""
        conversation = self._session.conversation
        if secret:
            conversation.redacting = True
            conversation.sent(secret)
            conversation.redacting = False
            lines = [secret, *lines]
        for line in lines[1 if secret else 0:]:
            conversation.sent(line, owner)
        owners: list[Lines | None] = [owner] * len(handlers)
        if secret:
            owners[0] = None  # AUTH's reply is the session's
        self._expected.extend(zip(handlers, owners, strict=True))
        self._session.write(b"\r\n".join(lines) + b"\r\n")

    def stop(self) -> None:
        """The connection is gone: nothing more is written."""
        self._expected.clear()
        if self._producer is not None:
            self._producer.stopProducing()
            self._producer = None

    def quit(self, closed: Handler) -> None:
        """Send QUIT (unless it went with the message); ``closed`` gets its reply."""
        if self.quit_sent:
            self._expect(closed, None)
        else:
            self._send([b"QUIT"], [closed])
