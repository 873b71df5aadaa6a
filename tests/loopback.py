"""A bounded socket server on 127.0.0.1 for tests that script a peer by hand."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

_DEADLINE = 10.0


@contextmanager
def serving(handle: Callable[[socket.socket], None], connections: int,
            ignored: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[int]:
    """Accept up to ``connections`` connections, one at a time, and hand each
    to ``handle`` (errors of the ``ignored`` types end that connection only);
    yields the port. Stops accepting, and joins its thread, on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept_loop() -> None:
        served = 0
        while not stop.is_set() and served < connections:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            served += 1
            with connection, suppress(*ignored):
                handle(connection)

    thread = threading.Thread(target=accept_loop, name="loopback-peer", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(_DEADLINE)
        listener.close()


class LineReader:
    """The lines a client sends, CRLF removed; ``pending`` holds what came
    after the last line returned (the start of message data, say)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self.pending = b""

    def line(self) -> bytes | None:
        """The next line, or None when the client has closed the connection."""
        while b"\r\n" not in self.pending:
            chunk = self._connection.recv(65536)
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line
