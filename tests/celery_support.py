"""A private Redis and real Celery worker processes for tests/test_celery.py and bench_celery.py.

Redis runs on 127.0.0.1 with its own port and directory (never the system's
service); a worker is ``celery -A celery_app worker`` (prefork pool) in a
process group of its own, stopped with the whole group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from postfix import free_port, stop_process, wait_for_port

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def redis_binary() -> str | None:
    """The redis-server binary (Debian package redis-server), or None."""
    return shutil.which("redis-server", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")


class RedisServer:
    """A private redis-server on 127.0.0.1: no persistence, its own directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = Path(tempfile.mkdtemp(prefix="syncsmtp-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._folder),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
             "--logfile", str(self._folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_for_port(self.port, 10):
            self.stop()
            raise RuntimeError("redis-server did not start")
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)


class CeleryWorker:
    """``celery -A celery_app worker --pool prefork`` in its own process group.

    ``env`` is passed to tests/celery_app.py (SYNCSMTP_TEST_* variables).
    """

    def __init__(self, env: dict[str, str], *, concurrency: int = 2, queue: str = "celery",
                 app: str = "celery_app") -> None:
        self._env = env
        self._concurrency = concurrency
        self._queue = queue
        self._app = app
        self._folder = Path(tempfile.mkdtemp(prefix="syncsmtp-celery-"))
        self.log = self._folder / "worker.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, ready_seconds: float = 60.0) -> CeleryWorker:
        env = dict(os.environ)
        env.update(self._env)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "celery", "-A", self._app, "worker", "--pool", "prefork",
                   "--concurrency", str(self._concurrency), "-Q", self._queue, "--without-heartbeat",
                   "--without-gossip", "--without-mingle", "--loglevel", "INFO",
                   "--hostname", f"syncsmtp-test-{os.getpid()}@%h", "--logfile", str(self.log)]
        self._process = subprocess.Popen(command, cwd=TESTS, env=env, start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.log.exists() and " ready." in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"the Celery worker did not become ready:\n{log[-3000:]}")

    def children(self) -> list[int]:
        """The pool's child processes (their pids)."""
        assert self._process is not None
        found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self._process.pid)],
                               capture_output=True, text=True, check=False).stdout.split()
        return [int(pid) for pid in found]

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process, as Celery expects), then
        SIGKILL for whatever is left of the process group after 15 s."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(10)
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
