"""A user's own test run, with the ``smtp_server`` fixtures, prints no DeprecationWarning.

The tests below write a small test module of the kind a user writes (no
configuration file, no warning filters of this project's) into a temporary
folder, and run pytest on it in a subprocess with DeprecationWarning turned
into errors, from interpreter start-up on. A warning raised in the reactor
thread (where the test server and the client do TLS) fails the handshake
there, and so the send; any that slipped through would still be printed, and
the output is checked for it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_RUN_TIMEOUT = 180.0

_USER_TESTS = '''
import syncsmtp

MESSAGE = b"Subject: hello\\r\\n\\r\\nhello\\r\\n"


def test_starttls_send(smtp_server):
    result = syncsmtp.send(MESSAGE, smtp_server.policy(), timeout=30,
                           sender="a@example.com", recipients=["b@example.com"])
    [received] = smtp_server.wait_for(1)
    assert result.tls is not None and received.tls and received.auth_user == "user"


def test_implicit_tls_with_a_client_certificate(smtp_server_factory):
    server = smtp_server_factory(tls="implicit", users={"user": "password"},
                                 require_client_certificate=True)
    policy = server.policy(client_cert=server.client_cert_file, client_key=server.client_key_file)
    syncsmtp.send(MESSAGE, policy, timeout=30, sender="a@example.com", recipients=["b@example.com"])
    [received] = server.wait_for(1)
    assert received.client_certificate == "syncsmtp test client"


def test_starttls_with_a_client_certificate_over_a_mailer(smtp_server_factory):
    server = smtp_server_factory(tls="starttls", require_client_certificate=True)
    policy = server.policy(client_cert=server.client_cert_file, client_key=server.client_key_file)
    with syncsmtp.Mailer(policy) as mailer:
        for _ in range(2):
            mailer.send(MESSAGE, timeout=30, sender="a@example.com", recipients=["b@example.com"])
    assert len(server.wait_for(2)) == 2


def test_check_reads_the_certificate(smtp_server):
    report = syncsmtp.check(smtp_server.policy(), timeout=30)
    assert report.certificate is not None
'''


def _run_user_tests(folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "test_mail.py").write_text(textwrap.dedent(_USER_TESTS), encoding="utf-8")
    # An empty configuration file of its own, so that no parent folder's applies.
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    environment = dict(os.environ, PYTHONWARNINGS="error::DeprecationWarning")
    return subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "error::DeprecationWarning", "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
         str(folder / "test_mail.py")],
        cwd=folder, env=environment, capture_output=True, text=True, timeout=_RUN_TIMEOUT,
    )


def test_tls_through_the_fixtures_raises_no_deprecation_warning(tmp_path: Path) -> None:
    done = _run_user_tests(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "4 passed" in done.stdout, output
    assert "DeprecationWarning" not in output, output
