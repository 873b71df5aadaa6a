"""The test server's scripted faults: what a test asks for, kept for the reactor thread to apply.

Plain data and locks without Twisted: the test thread writes a script, the
sessions in the reactor thread take from it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["STAGES", "Fault", "FaultScripting", "Script"]

#: The stages a fault can be scripted at ("tls-handshake" only for stall()).
STAGES = ("greeting", "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "end-of-data", "quit")


@dataclass
class Fault:
    kind: Literal["fail", "drop", "stall"]
    code: int = 0
    text: str = ""
    remaining: int | None = None


@dataclass
class Script:
    """The faults in force, shared by the test thread and the reactor thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: dict[str, Fault] = field(default_factory=dict)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    injection: bytes = b""
    malformed_challenge: bool = False

    def take(self, stage: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(stage)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self.faults[stage]
            return fault

    def refusal(self, address: str) -> tuple[int, str] | None:
        """The reply scripted for RCPT TO ``address`` (any case), or None."""
        with self.lock:
            return self.refused.get(address.lower())


class FaultScripting:
    """The methods of :class:`SMTPTestServer` that script faults (a base class, so that the
    server's own module keeps to its life cycle and what tests inspect)."""

    _script: Script

    def _set(self, stage: str, fault: Fault) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        with self._script.lock:
            self._script.faults[stage] = fault

    def fail(self, stage: str, code: int, text: str, *, times: int | None = None) -> None:
        """Answer ``stage`` with this reply (``times``: only the next N times)."""
        self._set(stage, Fault("fail", code, text, times))

    def drop(self, stage: str, *, times: int | None = None) -> None:
        """Close the connection abruptly at ``stage`` (after recording the message,
        for ``"end-of-data"``); ``times``: only the next N times."""
        self._set(stage, Fault("drop", remaining=times))

    def stall(self, stage: str) -> None:
        """Never answer ``stage`` (``"tls-handshake"``: answer STARTTLS, then never start TLS)."""
        if stage == "tls-handshake":
            with self._script.lock:
                self._script.faults[stage] = Fault("stall")
            return
        self._set(stage, Fault("stall"))

    def refuse_recipient(self, address: str, code: int = 550, text: str = "5.1.1 No such user") -> None:
        """Answer RCPT TO for ``address`` with this reply."""
        with self._script.lock:
            self._script.refused[address.lower()] = (code, text)

    def inject_after_starttls(self, data: bytes) -> None:
        """Send ``data`` in the same write as the 220 reply to STARTTLS, before TLS."""
        with self._script.lock:
            self._script.injection = data

    def malformed_auth_challenge(self) -> None:
        """Answer AUTH LOGIN / CRAM-MD5 with a challenge that is not base64."""
        with self._script.lock:
            self._script.malformed_challenge = True

    def clear_faults(self) -> None:
        """Remove every scripted fault and refusal."""
        with self._script.lock:
            self._script.faults.clear()
            self._script.refused.clear()
            self._script.injection = b""
            self._script.malformed_challenge = False
