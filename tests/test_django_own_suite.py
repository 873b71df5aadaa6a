"""Django's own SMTP backend tests, with syncsmtp's backend in place of Django's.

At test time this fetches the sdist of the installed Django version (``pip
download``; once per test session, into pytest's temporary folder), extracts
its ``tests/`` folder and runs, with Django's own ``tests/runtests.py`` in a
subprocess, ``mail.tests.SMTPBackendTests`` (with what it inherits from
``BaseEmailBackendTests``) and ``mail.tests.SMTPBackendStoppedServerTests``
against their aiosmtpd server. The settings module given to runtests.py
(tests/django_own_suite/settings.py) makes ``django.core.mail.backends.smtp.EmailBackend``
syncsmtp's backend and records every outcome. Every test must pass but those
of :data:`EXCLUDED`, which inspect smtplib itself; docs/django.rst lists them
with the same reasons. Nothing of Django's is kept in this repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("mail.tests.SMTPBackendTests", "mail.tests.SMTPBackendStoppedServerTests")

#: Django's tests that look at smtplib rather than at what the backend does, with why each cannot
#: pass with a backend that does not use smtplib. Their outcome is not judged.
EXCLUDED = {
    "mail.tests.SMTPBackendTests.test_server_open":
        "reads backend._partial_connection, the smtplib.SMTP object Django's backend keeps "
        "while it logs in",
    "mail.tests.SMTPBackendTests.test_reopen_replaces_partial_connection":
        "reads backend._partial_connection and the socket of that smtplib.SMTP object (.sock)",
    "mail.tests.SMTPBackendTests.test_email_msg_uses_crlf":
        "patches smtplib.SMTP.send to capture the data written; syncsmtp does not write through "
        "smtplib (its CRLF-only data is checked on the wire in test_send.py)",
}


@pytest.fixture(scope="session")
def django_tests_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tests/`` folder of the sdist of the installed Django, fetched once per session."""
    wanted = version("django")
    folder = tmp_path_factory.mktemp("django-sdist")
    try:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "--quiet", f"django=={wanted}", "--dest", str(folder)],
            capture_output=True, text=True, timeout=300, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot download the sdist of Django {wanted}: {error}")
    archives = sorted(folder.glob("*.tar.gz"))
    if fetched.returncode != 0 or len(archives) != 1:
        pytest.skip(f"cannot download the sdist of Django {wanted} (pip exited {fetched.returncode}): "
                    f"{fetched.stderr.strip()[-600:]}")
    with tarfile.open(archives[0]) as archive:
        members = [member for member in archive.getmembers() if member.name.split("/")[1:2] == ["tests"]]
        if not members:
            pytest.fail(f"{archives[0].name} has no tests/ folder")
        top = members[0].name.split("/")[0]
        if hasattr(tarfile, "data_filter"):
            archive.extractall(folder, members=members, filter="data")
        else:  # Python before 3.10.12 / 3.11.4: refuse what the data filter would
            for member in members:
                if not (member.isfile() or member.isdir()) or ".." in member.name.split("/"):
                    pytest.fail(f"unexpected member {member.name!r} in {archives[0].name}")
            archive.extractall(folder, members=members)  # noqa: S202  # members checked above
    tests = folder / top / "tests"
    assert (tests / "runtests.py").is_file() and (tests / "mail" / "tests.py").is_file()
    return tests


def run_djangos_suite(tests: Path, results: Path) -> tuple[dict[str, dict[str, str]], str]:
    """Run :data:`CLASSES` with runtests.py and our settings; the outcomes and the output."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    env["SYNCSMTP_SUITE_RESULTS"] = str(results)
    ran = subprocess.run(
        [sys.executable, "runtests.py", "--settings=django_own_suite.settings", "--parallel=1",
         "--verbosity=2", "--noinput", *CLASSES],
        cwd=tests, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    output = (ran.stdout + ran.stderr).strip()
    if not results.is_file():
        pytest.fail(f"runtests.py recorded no outcome (exit {ran.returncode}):\n{output[-4000:]}")
    outcomes: dict[str, dict[str, str]] = json.loads(results.read_text(encoding="utf-8"))
    return outcomes, output


@pytest.mark.timeout(900)
def test_djangos_smtp_backend_tests_pass_with_syncsmtp(django_tests_folder: Path, tmp_path: Path) -> None:
    outcomes, output = run_djangos_suite(django_tests_folder, tmp_path / "outcomes.json")
    for name in CLASSES:
        assert any(test.startswith(name + ".") for test in outcomes), f"{name} did not run:\n{output[-4000:]}"
    missing = sorted(set(EXCLUDED) - set(outcomes))
    assert not missing, f"excluded tests that Django {version('django')} does not have: {missing}"
    unexpected = {test: outcome for test, outcome in sorted(outcomes.items())
                  if test not in EXCLUDED and outcome["outcome"] != "passed"}
    report = "\n\n".join(f"{test}: {outcome['outcome']}\n{outcome['detail'][-1500:]}"
                         for test, outcome in unexpected.items())
    assert not unexpected, f"{len(unexpected)} of Django's tests did not pass with syncsmtp:\n\n{report}"



def test_the_excluded_tests_are_documented() -> None:
    docs = (REPO / "docs" / "django.rst").read_text(encoding="utf-8")
    for test in EXCLUDED:
        assert f"``{test.rpartition('.')[2]}``" in docs, test
