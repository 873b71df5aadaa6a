"""Fixtures shared by the test modules (the test server's come from syncsmtp's pytest plugin)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from postfix import PostfixInstance, binaries_missing


@pytest.fixture(scope="session")
def postfix() -> Iterator[PostfixInstance]:
    """A private Postfix with Dovecot SASL on 127.0.0.1, one per test worker.

    Skipped when Postfix or Dovecot is not installed, except under CI (CI=true),
    where .ci/run installs them and their absence is a failure.
    """
    missing = binaries_missing()
    if missing:
        message = f"not installed: {', '.join(missing)} (apt-get install postfix dovecot-core)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("running a private Postfix needs root (to hand its queue to the postfix user)")
    # Not pytest's tmp_path: its parent is private to root, and Postfix's own
    # processes must reach the queue.
    folder = Path(tempfile.mkdtemp(prefix="syncsmtp-postfix-"))
    instance = PostfixInstance(folder).start()
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_postfix(postfix: PostfixInstance) -> PostfixInstance:
    """The worker's Postfix with an empty Maildir."""
    postfix.clear()
    return postfix


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the hostile-server fuzz test (tests/test_fuzz.py); each has an
    environment variable too, for runs through tox or CI scripts."""
    group = parser.getgroup("syncsmtp-fuzz", "hostile-server fuzz test (tests/test_fuzz.py)")
    group.addoption("--fuzz-cases", type=int, default=None,
                    help="cases for syncsmtp.send() (env SYNCSMTP_FUZZ_CASES, default 300; "
                         "the Mailer test runs a third as many)")
    group.addoption("--fuzz-seed", default=None,
                    help="seed of the cases (env SYNCSMTP_FUZZ_SEED, default 'syncsmtp')")
    group.addoption("--fuzz-only", default=None,
                    help="comma-separated case indices to run, alone (env SYNCSMTP_FUZZ_ONLY)")
    group.addoption("--fuzz-timeout", type=float, default=None,
                    help="each send's deadline in seconds (env SYNCSMTP_FUZZ_TIMEOUT, default 2)")
    group.addoption("--fuzz-parallel", type=int, default=None,
                    help="cases played at once in a test process (env SYNCSMTP_FUZZ_PARALLEL, default 4)")
