"""syncsmtp.check(): a blocking probe of a server, against the project's test server,
and the command line's ``check`` going through it."""

from __future__ import annotations

import ast
import base64
import dataclasses
import datetime
import json
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
PASSWORD = "pw-Check-0042"


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert base64.b64encode(PASSWORD.encode()).decode() not in text


def test_check_starttls_auth_and_certificate(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": PASSWORD}, extensions=("PIPELINING", "SIZE 1000"))
    result = syncsmtp.check(server.policy(), timeout=10)

    assert isinstance(result, syncsmtp.CheckResult)
    assert result.ok and result.error is None
    assert (result.host, result.port, result.tls_mode) == ("127.0.0.1", server.port, "starttls")
    assert result.greeting is not None and result.greeting.code == 220
    before, after = result.capabilities_before_tls, result.capabilities_after_tls
    assert isinstance(before, syncsmtp.Capabilities) and isinstance(after, syncsmtp.Capabilities)
    assert before.offers("starttls") and not before.auth_mechanisms, "AUTH only after TLS"
    assert after.auth_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5") and not after.offers("STARTTLS")
    assert after.offers("PIPELINING") and after.size_limit == 1000
    assert result.capabilities is after
    assert result.tls is not None and result.tls.version.startswith("TLSv1.")
    certificate = result.certificate
    assert isinstance(certificate, syncsmtp.CertificateInfo)
    assert certificate.subject == "CN=localhost" and "test CA" in certificate.issuer
    assert "IP:127.0.0.1" in certificate.alt_names and len(certificate.sha256.split(":")) == 32
    assert certificate.not_before < datetime.datetime.now(datetime.timezone.utc) < certificate.not_after
    assert 0 < certificate.days_left() < 3650
    assert result.certificate_verified is True
    assert result.auth_attempted and result.auth_mechanism == "PLAIN", "PLAIN first under verified TLS"

    (commands,) = server.commands
    assert commands[:3] == [b"EHLO localhost", b"STARTTLS", b"EHLO localhost"]
    assert commands[-1] == b"QUIT" and not any(c.startswith(b"MAIL") for c in commands)
    assert not server.outbox, "a check sends nothing"
    assert "C: AUTH PLAIN <redacted>" in result.transcript
    assert_no_password(repr(result), str(result), "\n".join(result.transcript))
    assert "transcript" not in repr(result)


def test_check_result_is_plain_read_only_data(smtp_server: SMTPTestServer) -> None:
    result = syncsmtp.check(smtp_server.policy(), timeout=10)
    assert pickle.loads(pickle.dumps(result)) == result
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.port = 25  # type: ignore[misc]
    assert result.capabilities is not None
    with pytest.raises(TypeError):
        result.capabilities.keywords["AUTH"] = "PLAIN"  # type: ignore[index]


def test_check_records_refused_credentials(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    result = syncsmtp.check(server.policy(password=PASSWORD + "-wrong"), timeout=10)
    assert not result.ok and isinstance(result.error, syncsmtp.AuthDeclinedError)
    assert result.auth_attempted and result.auth_mechanism is None
    assert result.capabilities_after_tls is not None and result.certificate_verified is True
    assert_no_password(repr(result), str(result.error), "\n".join(result.transcript))


def test_check_shows_a_certificate_that_does_not_verify_without_warning_or_auth(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    untrusting = syncsmtp.Policy(host="127.0.0.1", port=server.port, username="user", password=PASSWORD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = syncsmtp.check(untrusting, timeout=10)
    assert not [w for w in caught if issubclass(w.category, syncsmtp.InsecureTLSWarning)]
    assert isinstance(result.error, syncsmtp.CertificateError)
    assert result.certificate_verified is False
    assert result.certificate is not None and result.certificate.subject == "CN=localhost"
    assert not result.auth_attempted and result.auth_mechanism is None
    assert len(server.commands) == 2, "the failed session and one that only looks"
    assert not any(c.startswith(b"AUTH") for commands in server.commands for c in commands)


def test_check_implicit_tls_and_plaintext(smtp_server_factory: ServerFactory) -> None:
    implicit = smtp_server_factory(tls="implicit")
    result = syncsmtp.check(implicit.policy(), timeout=10)
    assert result.ok and result.tls_mode == "implicit" and result.tls is not None
    assert result.capabilities_before_tls is None and result.capabilities_after_tls is not None
    assert not result.auth_attempted

    plain = smtp_server_factory(tls="none")
    result = syncsmtp.check(plain.policy(), timeout=10)
    assert result.ok and result.tls is None and result.certificate is None
    assert result.certificate_verified is None and result.capabilities_after_tls is None
    assert result.capabilities is result.capabilities_before_tls is not None


def test_check_records_a_server_that_refuses_what_the_policy_requires(
    smtp_server_factory: ServerFactory,
) -> None:
    plain = smtp_server_factory(tls="none")
    result = syncsmtp.check(plain.policy(tls="starttls"), timeout=10)
    assert isinstance(result.error, syncsmtp.TLSRequiredError) and not result.ok
    before = result.capabilities_before_tls
    assert before is not None and not before.offers("STARTTLS")


def test_check_time_out_is_recorded(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.stall("greeting")
    result = syncsmtp.check(server.policy(), timeout=1)
    assert isinstance(result.error, syncsmtp.SendTimeout) and result.greeting is None


# -- the command line goes through it -------------------------------------------------------------


def test_cli_check_calls_syncsmtp_check(
    smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncsmtp.cli import main

    server = smtp_server_factory(users={"user": PASSWORD})
    calls: list[tuple[syncsmtp.Policy, float]] = []
    real_check = syncsmtp.check

    def spy(policy: syncsmtp.Policy, timeout: float = syncsmtp.DEFAULT_TIMEOUT) -> syncsmtp.CheckResult:
        calls.append((policy, timeout))
        return real_check(policy, timeout)

    monkeypatch.setattr(syncsmtp, "check", spy)
    monkeypatch.setenv("CHECK_PW", PASSWORD)
    assert server.ca_file is not None
    code = main(["check", "--json", "--host", "127.0.0.1", "--port", str(server.port), "--ca-file",
                 server.ca_file, "--user", "user", "--password-env", "CHECK_PW", "--timeout", "7"])
    out = capsys.readouterr().out
    assert code == 0
    ((policy, timeout),) = calls
    assert (policy.host, policy.port, policy.username, timeout) == ("127.0.0.1", server.port, "user", 7.0)
    report = json.loads(out)
    assert report["auth"] == {"username": "user", "attempted": True, "succeeded": True,
                              "mechanism": "PLAIN"}
    assert report["certificate"]["subject"] == "CN=localhost" and report["certificate"]["verified"]
    assert report["capabilities"]["before_tls"]["starttls"] is True
    assert_no_password(out)


def test_cli_check_imports_nothing_private_from_the_library() -> None:
    """Its imports from outside syncsmtp.cli name no private module and no private name."""
    import syncsmtp.cli._check as module

    tree = ast.parse(Path(module.__file__ or "").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 2:
            parts = (node.module or "").split(".")
            assert not any(part.startswith("_") for part in parts if part), ast.unparse(node)
            assert not any(alias.name.startswith("_") for alias in node.names), ast.unparse(node)
            assert not any(alias.name == "wait_for_outcome" for alias in node.names)
        if isinstance(node, ast.Import):
            assert not any("._" in alias.name for alias in node.names), ast.unparse(node)
