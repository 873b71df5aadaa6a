"""Where a send stands (read from the caller's thread for its timeout message)."""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """The stage of one message's send; ``maybe_delivered`` once its whole
    content (the final dot, or the last BDAT chunk) was written."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = "connect"

    @property
    def maybe_delivered(self) -> bool:
        """True once the whole message and its terminator were written."""
        return self.stage == "end-of-data"
