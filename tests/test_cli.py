"""The command line, run as a user runs it: ``python -m syncsmtp ...`` in a subprocess.

Against the project's test server (started in this process; the subprocess
connects over 127.0.0.1), against ``syncsmtp serve`` (itself a subprocess,
fed by smtplib, swaks and ``syncsmtp send``), and against Postfix.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import json
import mailbox
import os
import queue
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postfix import PostfixInstance

import syncsmtp
from syncsmtp.cli._exit import ExitCode
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
PASSWORD = "pw-Secret-4711"
SINK_PASSWORD = "sink-Secret-0815"


def environment(**extra: str) -> dict[str, str]:
    """The user's environment without syncsmtp's own variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in ("SYNCSMTP_URL", "NO_COLOR")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m syncsmtp ARGS`` to the end; stdin is empty (not a terminal) unless given."""
    return subprocess.run(
        [sys.executable, "-m", "syncsmtp", *args],
        input=stdin if stdin is not None else "",
        capture_output=True, text=True, timeout=timeout, env=env or environment(),
    )


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(server: SMTPTestServer, *more: str) -> list[str]:
    """Options for the test server: its address, TLS mode and CA."""
    args = ["--host", server.host, "--port", str(server.port), "--tls", server.tls, *more]
    if server.ca_file:
        args += ["--ca-file", server.ca_file]
    return args


def message_args(*more: str) -> list[str]:
    return ["--from", "ann@example.com", "--to", "bob@example.com", "--subject", "cli test",
            "--body", "hello from the cli", *more]


# -- help, version --------------------------------------------------------------------


def test_help_version_and_examples() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s", top.stdout, re.MULTILINE), code
    for command in ("send", "check", "serve", "demo"):
        page = cli(command, "--help")
        assert page.returncode == 0, page.stderr
        assert "examples:" in page.stdout and f"syncsmtp {command}" in page.stdout
    version = cli("--version")
    assert version.returncode == 0 and f"syncsmtp {syncsmtp.__version__}" in version.stdout


@pytest.mark.skipif(shutil.which("syncsmtp") is None, reason="the console script is not installed")
def test_console_script() -> None:
    done = subprocess.run(["syncsmtp", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and syncsmtp.__version__ in done.stdout


# -- send -------------------------------------------------------------------------------


def test_send_composed_message_starttls_auth(smtp_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    (tmp_path / "page.html").write_text("<p>hello <b>html</b></p>\n")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    done = cli(
        "send", *server_args(server, "--user", "user", "--password-env", "SMTP_PW",
                             "--auth-mechanism", "PLAIN", "--transcript", "--color", "never"),
        *message_args("--cc", "cc@example.com", "--bcc", "hidden@example.com",
                      "--html-file", str(tmp_path / "page.html"), "--attach", str(tmp_path / "data.csv"),
                      "--header", "X-Test: yes"),
        env=environment(SMTP_PW=PASSWORD),
    )
    assert done.returncode == 0, done.stderr
    received = server.wait_for(1)[0]
    assert received.tls and received.auth_user == "user"
    assert received.recipients == ("bob@example.com", "cc@example.com", "hidden@example.com")
    message = received.message
    assert message["Subject"] == "cli test" and message["X-Test"] == "yes"
    assert "Bcc" not in message and b"hidden@example.com" not in received.data
    body = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert body is not None and body.get_content() == "hello from the cli\r\n"
    assert html is not None and "<b>html</b>" in html.get_content()
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "data.csv" and attachment.get_content_type() == "text/csv"
    # The transcript, the result table, and no password anywhere.
    assert "C: AUTH PLAIN <redacted>" in done.stdout
    assert "S: 235" in done.stdout and "accepted    bob@example.com" in done.stdout
    assert "\x1b[" not in done.stdout
    assert_no_secret(done.stdout + done.stderr, PASSWORD)


def test_send_with_password_in_syncsmtp_url_and_json(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    url = f"smtp+starttls://user:{PASSWORD}@127.0.0.1:{server.port}?ca_file={server.ca_file}"
    done = cli("send", *message_args("--json"), env=environment(SYNCSMTP_URL=url))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["exit_code"] == 0
    assert result["accepted"] == ["bob@example.com"] and result["reply"]["code"] == 250
    assert result["tls"]["version"].startswith("TLS") and result["auth_mechanism"] == "PLAIN"
    assert "C: AUTH PLAIN <redacted>" in result["transcript"]
    assert_no_secret(done.stdout + done.stderr, PASSWORD)
    assert server.wait_for(1)[0].auth_user == "user"


def test_send_ready_message_from_stdin_byte_for_byte(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    raw = (
        "From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nBcc: hidden@example.com,\r\n"
        " other@example.com\r\nSubject: a subject line long enough that a re-serialising client "
        "would fold it somewhere\r\nDKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s;\r\n"
        "\tbh=abc; b=defghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\r\n"
        "Message-ID: <ready@example.com>\r\n\r\n.a line with a dot\r\nend\r\n"
    )
    done = cli("send", *server_args(server), "--message", "-", stdin=raw)
    assert done.returncode == 0, done.stderr
    received = server.wait_for(1)[0]
    assert received.sender == "ann@example.com"
    assert received.recipients == ("bob@example.com", "hidden@example.com", "other@example.com")
    expected = raw.replace("Bcc: hidden@example.com,\r\n other@example.com\r\n", "")
    assert received.data == expected.encode()


def test_send_some_recipients_refused_still_sends(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.refuse_recipient("nobody@example.com")
    # swaks's spelling of the server, host:port; a --header replaces the header of that name.
    done = cli("send", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
               *message_args("--to", "nobody@example.com", "--header", "Subject: replaced"))
    assert done.returncode == 0, done.stderr
    assert "refused: nobody@example.com: 550 5.1.1 No such user" in done.stderr
    received = server.wait_for(1)[0]
    assert received.recipients == ("bob@example.com",)
    assert received.message.get_all("Subject") == ["replaced"]


# -- every failure has its exit code ------------------------------------------------------------


def test_exit_3_connection_refused() -> None:
    port = free_port()
    for command in ("send", "check"):
        extra = message_args() if command == "send" else []
        done = cli(command, "--host", "127.0.0.1", "--port", str(port), "--tls", "none", *extra)
        assert done.returncode == ExitCode.CONNECT == 3, done.stderr
        assert "error: ConnectError: cannot connect to 127.0.0.1" in done.stderr


def test_exit_3_stalled_server_and_no_password_in_argv(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    server.stall("mail")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncsmtp", "send", *server_args(server, "--user", "user",
                                                                "--password-env", "SMTP_PW"),
         *message_args(), "--timeout", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(SMTP_PW=PASSWORD),
    )
    try:
        # What `ps` shows of the running send (once it is talking to the server): never the password.
        deadline = time.monotonic() + 20
        while server.connections == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"--password-env\0SMTP_PW" in cmdline and PASSWORD.encode() not in cmdline
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == ExitCode.CONNECT == 3, err
    assert "error: SendTimeout:" in err and "stage 'mail'" in err
    assert "hint: --timeout" in err
    assert time.monotonic() - started < 15
    assert_no_secret(out + err, PASSWORD)


def test_exit_130_ctrl_c_cancels_a_send(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.stall("data")
    process = subprocess.Popen(
        [sys.executable, "-m", "syncsmtp", "send", *server_args(server), *message_args(), "--timeout", "30"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(),
    )
    try:
        deadline = time.monotonic() + 20
        while not any(b"DATA" in lines for lines in server.commands) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == ExitCode.INTERRUPTED == 130, err
    assert "interrupted" in err and not server.outbox


def read_terminal(controller: int, deadline: float, until: bytes | None = None) -> bytes:
    """What a command wrote to its pseudo-terminal: until ``until`` appears, or
    else until the terminal closes; never past ``deadline``."""
    import select

    output = b""
    while (until is None or until not in output) and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        output += chunk
    return output


def test_password_prompt_does_not_echo(smtp_server_factory: ServerFactory) -> None:
    pty = pytest.importorskip("pty")
    server = smtp_server_factory(users={"user": PASSWORD})
    controller, terminal = pty.openpty()
    # A new session without a controlling terminal: getpass reads the pty on stdin.
    process = subprocess.Popen(
        [sys.executable, "-m", "syncsmtp", "check", *server_args(server, "--user", "user"),
         "--color", "never"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=environment(), start_new_session=True,
    )
    os.close(terminal)
    try:
        deadline = time.monotonic() + 30
        output = read_terminal(controller, deadline, until=b"password for user at 127.0.0.1")
        os.write(controller, PASSWORD.encode() + b"\n")
        output += read_terminal(controller, deadline)
        assert process.wait(timeout=30) == 0, output.decode()
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = output.decode()
    assert "succeeded as 'user' with PLAIN" in text
    assert_no_secret(text, PASSWORD)


def test_exit_3_stalled_check(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.stall("greeting")
    done = cli("check", *server_args(server), "--timeout", "1")
    assert done.returncode == 3, done.stderr
    assert "error: SendTimeout" in done.stderr


def test_exit_4_starttls_required_but_not_offered(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    send = cli("send", "--host", "127.0.0.1", "--port", str(server.port), *message_args())
    assert send.returncode == ExitCode.TLS == 4
    assert "error: TLSRequiredError: STARTTLS extension not supported by server. The server at 127.0.0.1" \
        in send.stderr
    assert "hint: --tls implicit" in send.stderr
    check = cli("check", "--host", "127.0.0.1", "--port", str(server.port), "--color", "never")
    assert check.returncode == 4
    assert re.search(r"^  STARTTLS\s+no$", check.stdout, re.MULTILINE)
    assert "FAILED (TLSRequiredError, exit code 4)" in check.stdout
    assert not server.outbox


def test_exit_4_untrusted_certificate(smtp_server: SMTPTestServer) -> None:
    args = ["--host", "127.0.0.1", "--port", str(smtp_server.port), "--user", "user",
            "--password-env", "SMTP_PW"]
    env = environment(SMTP_PW="password")
    send = cli("send", *args, *message_args(), env=env)
    assert send.returncode == 4
    assert "error: CertificateError: the certificate of 127.0.0.1" in send.stderr
    assert "hint: --ca-file FILE" in send.stderr
    check = cli("check", *args, "--json", env=env)
    assert check.returncode == 4
    report = json.loads(check.stdout)
    # It does not verify; a second session without verification (and without AUTH) shows it.
    assert report["certificate"]["verified"] is False
    assert report["certificate"]["subject"] == "CN=localhost"
    assert report["certificate"]["issuer"] == "CN=syncsmtp test CA"
    assert report["error"]["type"] == "CertificateError"
    assert report["auth"]["attempted"] is False
    assert not any(line.startswith("C: AUTH") for line in report["transcript"])
    assert not smtp_server.outbox


def test_exit_5_wrong_password(smtp_server: SMTPTestServer) -> None:
    wrong = "not-the-Password-99"
    for command in ("send", "check"):
        extra = message_args("--transcript") if command == "send" else ["--transcript"]
        done = cli(command, *server_args(smtp_server, "--user", "user", "--password-env", "SMTP_PW",
                                         "--auth-mechanism", "PLAIN"), *extra,
                   env=environment(SMTP_PW=wrong))
        assert done.returncode == ExitCode.AUTH == 5, done.stderr
        assert "error: AuthDeclinedError:" in done.stderr and "rejected the credentials" in done.stderr
        assert "C: AUTH PLAIN <redacted>" in done.stdout + done.stderr
        assert_no_secret(done.stdout + done.stderr, wrong, "\0user\0" + wrong)


def test_exit_6_recipient_refused(smtp_server: SMTPTestServer) -> None:
    smtp_server.refuse_recipient("bob@example.com", 550, "5.1.1 no mailbox here")
    done = cli("send", *server_args(smtp_server, "--user", "user", "--password-env", "SMTP_PW"),
               *message_args(), env=environment(SMTP_PW="password"))
    assert done.returncode == ExitCode.REFUSED == 6
    assert "error: RecipientsRefused:" in done.stderr and "5.1.1 no mailbox here" in done.stderr
    assert not smtp_server.outbox


def test_exit_7_ehlo_refused(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", ehlo=False)
    done = cli("send", *server_args(server), *message_args())
    assert done.returncode == ExitCode.PROTOCOL == 7
    assert "error: EHLORequiredError:" in done.stderr and "hint: --helo-fallback" in done.stderr
    assert cli("send", *server_args(server, "--helo-fallback"), *message_args()).returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["send", "--to", "bob@example.com"], "no server"),
        (["send", "--host", "127.0.0.1"], "no recipient"),
        (["send", "--host", "127.0.0.1", "--port", "99999", "--to", "b@example.com"], "not a port"),
        (["send", "--host", "127.0.0.1", "--to", "b@example.com", "--tls", "sometimes"], "invalid choice"),
        (["send", "--host", "127.0.0.1", "--url", "smtp://h", "--to", "b@example.com"], "not both"),
        (["send", "--host", "127.0.0.1", "--message", "-", "--subject", "x"], "cannot be combined"),
        (["send", "--host", "127.0.0.1", "--to", "b@example.com", "--attach", "/nonexistent/f"],
         "cannot read the attachment"),
        (["send", "--host", "127.0.0.1", "--to", "b@example.com", "--header", "no colon"], "--header"),
        (["send", "--host", "127.0.0.1", "--to", "bob@example.com\r\nRCPT TO:<x@y>"], "carriage return"),
        (["send", "--host", "127.0.0.1", "--user", "u", "--to", "b@example.com"],
         "a prompt needs a terminal"),
        (["check", "--host", "127.0.0.1", "--user", "u", "--password-env", "UNSET_VARIABLE_X"],
         "UNSET_VARIABLE_X is not set"),
        (["check", "--host", "127.0.0.1", "--tls", "none", "--user", "u", "--password-env", "HOME"],
         "plaintext"),
        (["serve", "--listen", "192.0.2.1:2525"], "loopback"),
        (["serve", "--listen", "localhost:http"], "--listen"),
        (["serve", "--user", "dev"], "a prompt needs a terminal"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_exit_2_usage(args: list[str], says: str) -> None:
    done = cli(*args, timeout=30)
    assert done.returncode == ExitCode.USAGE == 2, done.stdout + done.stderr
    assert says in done.stderr.replace("\n", " ")


@pytest.mark.parametrize("option", ["--password", "--password=", "--pass", "--auth-password"])
@pytest.mark.parametrize("command", ["send", "check", "serve"])
def test_password_on_the_command_line_is_refused(command: str, option: str) -> None:
    secret = "argv-Secret-123"
    words = [option + secret] if option.endswith("=") else [option, secret]
    done = cli(command, "--host", "127.0.0.1", "--to", "b@example.com", *words) if command == "send" \
        else cli(command, *words)
    assert done.returncode == 2
    assert "never taken from the command line" in done.stderr
    assert_no_secret(done.stdout + done.stderr, secret)


def test_url_option_with_password_is_refused() -> None:
    done = cli("send", "--url", "smtp+starttls://me:url-Secret-77@127.0.0.1:1", "--to", "b@example.com")
    assert done.returncode == 2
    assert "--url must not hold a password" in done.stderr and "SYNCSMTP_URL" in done.stderr
    assert_no_secret(done.stdout + done.stderr, "url-Secret-77")


def test_syncsmtp_url_password_is_not_sent_to_another_server(smtp_server: SMTPTestServer) -> None:
    # The environment's password is for the environment's server; --host names another.
    env = environment(SYNCSMTP_URL="smtp://user:env-Secret-55@smtp.invalid:587")
    done = cli("check", *server_args(smtp_server, "--user", "user"), env=env)
    assert done.returncode == 2 and "no password" in done.stderr
    assert_no_secret(done.stdout + done.stderr, "env-Secret-55")
    assert smtp_server.connections == 0


# -- check ---------------------------------------------------------------------------------------


def test_check_table_starttls_auth(smtp_server: SMTPTestServer) -> None:
    done = cli("check", *server_args(smtp_server, "--user", "user", "--password-env", "SMTP_PW"),
               env=environment(SMTP_PW="password"))
    assert done.returncode == 0, done.stderr
    table = done.stdout
    assert re.search(r"^greeting\s+220 localhost ESMTP syncsmtp test server$", table, re.MULTILINE)
    before, _, after = table.partition("EHLO after TLS")
    assert re.search(r"^EHLO before TLS\s+STARTTLS ", before, re.MULTILINE)
    assert re.search(r"^  AUTH\s+none$", before, re.MULTILINE)
    assert re.search(r"^  AUTH\s+PLAIN LOGIN CRAM-MD5$", after, re.MULTILINE)
    assert re.search(r"^  SIZE limit\s+52428800 bytes", after, re.MULTILINE)
    assert re.search(r"^  PIPELINING\s+no$", after, re.MULTILINE)
    assert re.search(r"^TLS\s+TLSv1\.[23], \S+", table, re.MULTILINE)
    assert re.search(r"^certificate\s+CN=localhost$", table, re.MULTILINE)
    assert re.search(r"^  verifies\s+yes", table, re.MULTILINE)
    assert re.search(r"^AUTH\s+succeeded as 'user' with PLAIN$", table, re.MULTILINE)
    assert re.search(r"^result\s+OK$", table, re.MULTILINE)
    assert not smtp_server.outbox
    assert not any(line.startswith(b"MAIL") for lines in smtp_server.commands for line in lines)


def test_check_json_starttls_auth(smtp_server_factory: ServerFactory) -> None:
    smtp_server = smtp_server_factory(users={"user": PASSWORD})
    done = cli("check", "--json", *server_args(smtp_server, "--user", "user", "--password-env", "SMTP_PW"),
               env=environment(SMTP_PW=PASSWORD))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["exit_code"] == 0 and report["error"] is None
    assert report["server"] == {"host": "127.0.0.1", "port": smtp_server.port, "tls_mode": "starttls"}
    assert report["greeting"]["code"] == 220
    before, after = report["capabilities"]["before_tls"], report["capabilities"]["after_tls"]
    assert before["starttls"] is True and before["auth_mechanisms"] == []
    assert after["starttls"] is False and after["auth_mechanisms"] == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert after["size_limit"] == 52428800 and after["pipelining"] is False and after["smtputf8"] is False
    assert report["tls"]["version"].startswith("TLSv1.")
    certificate = report["certificate"]
    assert certificate["verified"] is True and certificate["subject"] == "CN=localhost"
    assert "IP:127.0.0.1" in certificate["alt_names"] and 0 < certificate["days_left"] < 8
    assert report["auth"] == {
        "username": "user", "attempted": True, "succeeded": True, "mechanism": "PLAIN",
    }
    assert report["transcript"][-2:] == ["C: QUIT", "S: 221 2.0.0 Bye"]
    assert_no_secret(done.stdout + done.stderr, PASSWORD)


def test_check_implicit_tls_and_plaintext(smtp_server_factory: ServerFactory) -> None:
    implicit = smtp_server_factory(tls="implicit")
    report = json.loads(cli("check", "--json", *server_args(implicit)).stdout)
    assert report["ok"] and report["capabilities"]["before_tls"] is None
    assert report["capabilities"]["after_tls"] is not None and report["certificate"]["verified"] is True
    plain = smtp_server_factory(tls="none", extensions=("PIPELINING", "SIZE 1000"))
    done = cli("check", "--json", *server_args(plain))
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["tls"] is None and report["certificate"] is None
    assert report["capabilities"]["before_tls"]["size_limit"] == 1000
    assert report["capabilities"]["before_tls"]["pipelining"] is True


def test_colour_only_when_asked_or_on_a_terminal(smtp_server: SMTPTestServer) -> None:
    args = ["check", *server_args(smtp_server)]
    assert "\x1b[" not in cli(*args).stdout  # a pipe is not a terminal
    assert "\x1b[32m" in cli(*args, "--color", "always").stdout
    assert "\x1b[" not in cli(*args, "--color", "never").stdout
    # NO_COLOR holds for "auto" even on a terminal: run the command in a pseudo-terminal.
    pty = pytest.importorskip("pty")
    for no_color, expect in (("", True), ("1", False)):
        controller, terminal = pty.openpty()
        env = environment(TERM="xterm")
        if no_color:
            env["NO_COLOR"] = no_color
        process = subprocess.Popen([sys.executable, "-m", "syncsmtp", *args], stdout=terminal,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        try:
            os.close(terminal)
            output = read_terminal(controller, time.monotonic() + 30)
            assert process.wait(timeout=30) == 0
        finally:
            os.close(controller)
            if process.poll() is None:
                process.kill()
        assert (b"\x1b[" in output) is expect, output[:200]


# -- serve -----------------------------------------------------------------------------------------


class Served:
    """A ``syncsmtp serve`` subprocess on a free loopback port, read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
                 umask: int = -1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncsmtp", "serve", "--listen", listen, "--color", "never", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or environment(), umask=umask,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_for(r"listening on (?:[\d.]+|\[[\w:]+\]):(\d+) ")
        self.port = int(listening.group(1))
        self.wait_for(r"^  saving ")  # after the CA's line, when there is one
        ca = re.search(r"CA certificate: (\S+)", "".join(self.output))
        self.ca_file = ca.group(1) if ca else None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first line from now on that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"serve did not print {pattern!r}; it printed:\n{''.join(self.output)}")

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20) -> tuple[int, str, str]:
        """Signal it, and return its exit code, the rest of stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        rest: list[str] = []
        while (line := self._lines.get(timeout=timeout)) is not None:
            rest.append(line)
        self.output += rest
        assert self.process.stderr is not None
        return code, "".join(rest), self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Starts ``syncsmtp serve`` subprocesses; each is killed after the test if still running."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
              umask: int = -1) -> Served:
        started.append(Served(*args, env=env, listen=listen, umask=umask))
        return started[-1]

    yield start
    for served in started:
        served.kill()


def port_is_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_serve_eml_starttls_auth_from_smtplib_swaks_and_send(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    served = serve("--tls", "starttls", "--user", "dev", "--password-env", "SINK_PW",
                   "--output", str(folder), env=environment(SINK_PW=SINK_PASSWORD))
    assert served.ca_file is not None
    cmdline = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    assert SINK_PASSWORD.encode() not in cmdline

    # 1. smtplib: a client that is not ours.
    context = ssl.create_default_context(cafile=served.ca_file)
    with smtplib.SMTP("127.0.0.1", served.port, timeout=20) as client:
        client.starttls(context=context)
        client.login("dev", SINK_PASSWORD)
        client.sendmail("smtplib@example.com", ["one@example.com", "two@example.com"],
                        b"Subject: from smtplib\r\n\r\nbody\r\n")
    served.wait_for(r"^\[1\] .* from <smtplib@example\.com> to <one@example\.com>, <two@example\.com>")
    served.wait_for(r"Subject: from smtplib")
    served.wait_for(r"TLS, AUTH as 'dev'")
    served.wait_for(r"saved to .*\.eml")

    # 2. swaks, when installed (the password through its environment, not its argv).
    count = 1
    if shutil.which("swaks"):
        swaks = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{served.port}", "--tls", "--tls-verify",
             "--tls-ca-path", served.ca_file, "--auth", "LOGIN", "--auth-user", "dev",
             "--from", "swaks@example.com", "--to", "three@example.com", "--header", "Subject: from swaks"],
            capture_output=True, text=True, timeout=60,
            env=environment(SWAKS_OPT_auth_password=SINK_PASSWORD),
        )
        assert swaks.returncode == 0, swaks.stdout + swaks.stderr
        count += 1
        served.wait_for(rf"^\[{count}\] .* from <swaks@example\.com>")

    # 3. syncsmtp send, the password from SYNCSMTP_URL.
    url = f"smtp+starttls://dev:{SINK_PASSWORD}@127.0.0.1:{served.port}?ca_file={served.ca_file}"
    sent = cli("send", *message_args(), env=environment(SYNCSMTP_URL=url))
    assert sent.returncode == 0, sent.stderr
    count += 1
    served.wait_for(rf"^\[{count}\] .* from <ann@example\.com> to <bob@example\.com>")

    code, rest, err = served.stop(signal.SIGINT)
    assert code == 0, err
    assert f"stopped (interrupted): {count} messages" in rest
    assert port_is_closed(served.port)
    files = sorted(folder.glob("*.eml"))
    assert len(files) == count
    first = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert first["Return-Path"] == "<smtplib@example.com>"
    assert first.get_all("Delivered-To") == ["one@example.com", "two@example.com"]
    assert first["Subject"] == "from smtplib"
    assert files[-1].read_bytes().count(b"\r\n") > 5  # stored as received, CRLF
    assert_no_secret("".join(served.output) + err, SINK_PASSWORD)


def test_serve_mbox_stopped_by_sigterm(serve: Callable[..., Served], tmp_path: Path) -> None:
    target = tmp_path / "sink.mbox"
    served = serve("--format", "mbox", "--output", str(target))
    with smtplib.SMTP("127.0.0.1", served.port, timeout=20) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: one\r\n\r\nFrom the start\r\n")
        client.sendmail("c@example.com", ["d@example.com"], b"Subject: two\r\n\r\nsecond\r\n")
    served.wait_for(r"^\[2\] ")
    code, _, err = served.stop(signal.SIGTERM)
    assert code == 0, err
    assert port_is_closed(served.port)
    box = mailbox.mbox(str(target))
    try:
        messages = list(box)
        assert [m["Subject"] for m in messages] == ["one", "two"]
        assert messages[0].get_from().startswith("a@example.com ")
        assert messages[0]["Return-Path"] == "<a@example.com>"
        assert "From the start" in messages[0].get_payload()
    finally:
        box.close()


def test_serve_maildir_auth_any_max_messages(serve: Callable[..., Served], tmp_path: Path) -> None:
    target = tmp_path / "Maildir"
    served = serve("--format", "maildir", "--output", str(target), "--auth-any", "--require-auth",
                   "--max-messages", "2")
    with smtplib.SMTP("127.0.0.1", served.port, timeout=20) as client:
        client.ehlo()
        assert "PLAIN" in client.esmtp_features.get("auth", "")
        with pytest.raises(smtplib.SMTPSenderRefused):  # --require-auth
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
        client.login("whoever", "whatever")
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: maildir\r\n\r\nx\r\n")
    sent = cli("send", "--host", "127.0.0.1", "--port", str(served.port), "--tls", "none",
               "--user", "someone", "--password-env", "ANY_PW", "--allow-plaintext-auth", *message_args(),
               env=environment(ANY_PW="anything-at-all"))
    assert sent.returncode == 0, sent.stderr
    # The second message ends it by itself.
    served.wait_for(r"^stopped \(received 2 messages\): 2 messages saved")
    assert served.process.wait(timeout=20) == 0
    box = mailbox.Maildir(str(target), create=False)
    subjects = sorted(str(message["Subject"]) for message in box)
    assert subjects == ["cli test", "maildir"]
    assert "AUTH as 'someone'" in "".join(served.output)


def test_serve_port_in_use(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve("--output", str(tmp_path / "first"))
    done = cli("serve", "--listen", f"127.0.0.1:{served.port}", "--output", str(tmp_path / "second"),
               timeout=30)
    assert done.returncode == ExitCode.CONNECT == 3
    assert "cannot listen on 127.0.0.1:" in done.stderr
    code, _, _ = served.stop()
    assert code == 0


def test_serve_ipv6_loopback(serve: Callable[..., Served], tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    served = serve("--max-messages", "1", "--output", str(tmp_path / "mail"), listen="[::1]:0")
    sent = cli("send", "--host", "::1", "--port", str(served.port), "--tls", "none", *message_args())
    assert sent.returncode == 0, sent.stderr
    served.wait_for(r"^stopped \(received 1 messages\)")
    assert served.process.wait(timeout=20) == 0
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("kind", ["eml", "mbox", "maildir"])
def test_serve_saves_privately_whatever_the_umask(
    serve: Callable[..., Served], tmp_path: Path, kind: str
) -> None:
    # Under umask 0 a plain open() or mkdir() would make everything world-readable (0666 / 0777).
    parent = tmp_path / "made-by-serve"
    target = parent / {"eml": "mail", "mbox": "sink.mbox", "maildir": "Maildir"}[kind]
    served = serve("--format", kind, "--output", str(target), "--max-messages", "1", umask=0)
    with smtplib.SMTP("127.0.0.1", served.port, timeout=20) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: private\r\n\r\nsecret\r\n")
    served.wait_for(r"^stopped \(received 1 messages\)")
    assert served.process.wait(timeout=20) == 0
    assert mode(parent) == 0o700
    if kind == "eml":
        [saved] = target.glob("*.eml")
        assert mode(target) == 0o700
    elif kind == "mbox":
        saved = target
    else:
        [saved] = (target / "new").iterdir()
        assert {mode(target / sub) for sub in ("", "cur", "new", "tmp")} == {0o700}
    assert mode(saved) == 0o600
    assert b"secret" in saved.read_bytes()


def smtp_exchange(port: int, commands: list[bytes]) -> list[bytes]:
    """Write each command's exact bytes (CRLF added) on a raw socket; the last line of each reply."""
    replies: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as replies_in:

        def reply() -> bytes:
            for _ in range(50):  # lines in one reply, at most
                line = replies_in.readline(4096)
                if not line or line[3:4] != b"-":
                    return line
            raise AssertionError("no end of reply within 50 lines")

        assert reply().startswith(b"220 ")
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(reply())
    return replies


def test_serve_refuses_header_injection_through_the_envelope(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    served = serve("--output", str(folder), "--max-messages", "1")
    # A lone LF (or CR) inside a quoted local part stays inside the line: commands end at CRLF.
    replies = smtp_exchange(served.port, [
        b"EHLO client.example",
        b'MAIL FROM:<"a\nX-Injected: forged"@example.com>',
        b'MAIL FROM:<"a\rX-Injected: forged"@example.com>',
        b"MAIL FROM:<ann@example.com>",
        b'RCPT TO:<"b\nX-Injected: forged"@example.com>',
        b"RCPT TO:<bob@example.com>",
        b"DATA",
        b"Subject: clean\r\n\r\nbody\r\n.",
        b"QUIT",
    ])
    assert [reply[:9] for reply in replies] == [
        b"250 SIZE ", b"501 5.1.7", b"501 5.1.7", b"250 2.1.0", b"501 5.1.3", b"250 2.1.5",
        b"354 Conti", b"250 2.0.0", b"221 2.0.0",
    ]
    served.wait_for(r"^stopped \(received 1 messages\)")
    [saved] = folder.glob("*.eml")
    data = saved.read_bytes()
    assert b"X-Injected" not in data
    assert data.startswith(b"Return-Path: <ann@example.com>\r\nDelivered-To: bob@example.com\r\n"
                           b"Subject: clean\r\n")


@pytest.mark.parametrize("kind", ["eml", "mbox", "maildir"])
def test_mailstore_never_writes_a_header_line_from_the_envelope(tmp_path: Path, kind: str) -> None:
    # Whatever a server lets through, the store keeps each envelope address on its own line.
    from syncsmtp.cli._mailstore import open_store
    from syncsmtp.testing import ReceivedMessage

    store = open_store(kind, tmp_path / "store")
    received = ReceivedMessage(
        sender='"a\nX-Injected: forged"@example.com', recipients=('"b\r\nX-Injected: forged"@example.com',),
        data=b"Subject: x\r\n\r\nbody\r\n", raw=b"", mail_options=(), helo="h", tls=False, auth_user=None,
    )
    try:
        store.save(received)
    finally:
        store.close()
    if kind == "eml":
        [saved] = (tmp_path / "store").glob("*.eml")
    elif kind == "mbox":
        saved = tmp_path / "store"
    else:
        [saved] = (tmp_path / "store" / "new").iterdir()
    data = saved.read_bytes()
    assert not re.search(rb"^X-Injected", data, re.MULTILINE)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["X-Injected"] is None and parsed["Subject"] == "x"
    assert "X-Injected" in parsed["Return-Path"] and "X-Injected" in parsed["Delivered-To"]


def test_serve_escapes_control_characters_in_what_it_prints(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve("--output", str(tmp_path / "mail"), "--auth-any", "--max-messages", "1")
    subject = "\x1b[2J\x1b]0;owned\x07 csi \x9b31m h\u00e9llo \u2713"
    message = email.message.EmailMessage()
    message["Subject"] = subject  # an encoded word on the wire, decoded by serve
    message.set_content("body")
    message.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="\x1b[5mblink.bin")
    with smtplib.SMTP("127.0.0.1", served.port, timeout=20, local_hostname="\x1b[31mred.example") as client:
        client.login("\x1b[8mhidden", "whatever")
        client.sendmail("a@example.com", ["b@example.com"], message.as_bytes())
    served.wait_for(r"^stopped \(received 1 messages\)")
    assert served.process.wait(timeout=20) == 0
    _, _, err = served.stop()  # exited already: no signal, the rest of its output
    printed = "".join(served.output) + err
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", printed), repr(printed)
    assert "Subject: \\x1b[2J\\x1b]0;owned\\x07 csi \\x9b31m h\u00e9llo \u2713" in printed
    assert "\\x1b[5mblink.bin" in printed and "EHLO \\x1b[31mred.example" in printed
    assert "AUTH as '\\x1b[8mhidden'" in printed


def test_send_escapes_control_characters_from_the_server(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.fail("mail", 550, "5.7.1 \x1b[2J\x1b]0;owned\x07 go away")
    done = cli("send", *server_args(server), *message_args("--transcript", "--color", "never"))
    assert done.returncode == ExitCode.REFUSED, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr
    assert "S: 550 5.7.1 \\x1b[2J\\x1b]0;owned\\x07 go away" in done.stderr
    assert re.search(r"^error: .*\\x1b\[2J", done.stderr, re.MULTILINE)


def test_check_and_send_tables_escape_what_the_server_says(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", extensions=("8BITMIME", "X-\x1b[2JCLEAR"))
    done = cli("check", *server_args(server), "--color", "never")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "X-\\x1b[2JCLEAR" in done.stdout
    server.fail("rcpt", 550, "5.1.1 \x1b]0;owned\x07 no such user", times=1)
    sent = cli("send", *server_args(server), *message_args("--to", "carl@example.com", "--color", "never"))
    assert sent.returncode == 0, sent.stderr
    assert "\x1b" not in sent.stdout + sent.stderr and "\x07" not in sent.stdout + sent.stderr
    assert "\\x1b]0;owned\\x07" in sent.stderr


LOOPBACK_HOSTS = ("127.0.0.1", "127.9.8.7", "::1", "localhost", "LOCALHOST")


@pytest.mark.parametrize(
    "host", [*LOOPBACK_HOSTS, "0.0.0.0", "::", "", "192.0.2.1",  # noqa: S104 (never bound)
             "fe80::1", "::ffff:127.0.0.1", "127.1", "example.com"],
)
def test_serve_and_the_test_server_agree_on_loopback(host: str) -> None:
    from syncsmtp.cli._exit import UsageError
    from syncsmtp.cli._serve import parse_listen

    try:
        parse_listen(f"[{host}]:0" if ":" in host else f"{host}:0")
        cli_allows = True
    except UsageError:
        cli_allows = False
    try:
        SMTPTestServer(tls="none", host=host)  # only constructed, never started
        server_allows = True
    except ValueError:
        server_allows = False
    assert cli_allows == server_allows == (host in LOOPBACK_HOSTS)


# -- demo -------------------------------------------------------------------------------------------


def test_demo(tmp_path: Path) -> None:
    done = cli("demo", "--output", str(tmp_path / "demo"), "--color", "never")
    assert done.returncode == 0, done.stderr
    saved = re.search(r"^message saved to (\S+\.eml)$", done.stdout, re.MULTILINE)
    assert saved is not None and Path(saved.group(1)).parent == tmp_path / "demo"
    message = email.message_from_bytes(Path(saved.group(1)).read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "syncsmtp demo"
    assert "C: STARTTLS" in done.stdout and "C: AUTH PLAIN <redacted>" in done.stdout
    assert "S: 235" in done.stdout


# -- Postfix -------------------------------------------------------------------------------------


def postfix_args(postfix: PostfixInstance, *more: str, ca: bool = True) -> list[str]:
    args = ["--host", postfix.host, "--port", str(postfix.port), "--tls", "starttls", *more]
    return args + (["--ca-file", postfix.ca_file] if ca else [])


@pytest.mark.postfix
def test_postfix_send_and_check(fresh_postfix: PostfixInstance) -> None:
    env = environment(PF_PW=fresh_postfix.password)
    login = ["--user", fresh_postfix.username, "--password-env", "PF_PW"]
    sent = cli("send", *postfix_args(fresh_postfix, *login, "--transcript"),
               *message_args("--to", "rcpt@example.com"), env=env)
    assert sent.returncode == 0, sent.stderr
    assert "AUTH PLAIN <redacted>" in sent.stdout and "queued as" in sent.stdout
    delivered = email.message_from_bytes(fresh_postfix.wait_for(1)[0], policy=email.policy.default)
    assert delivered["Subject"] == "cli test" and "ESMTPSA" in delivered["Received"]

    check = cli("check", "--json", *postfix_args(fresh_postfix, *login), env=env)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    before, after = report["capabilities"]["before_tls"], report["capabilities"]["after_tls"]
    # Postfix: AUTH only after STARTTLS (smtpd_tls_auth_only), SMTPUTF8 and PIPELINING.
    assert before["starttls"] and before["auth_mechanisms"] == []
    assert set(after["auth_mechanisms"]) >= {"PLAIN", "LOGIN", "CRAM-MD5"}
    assert after["pipelining"] and after["smtputf8"] and after["size_limit"] == 52428800
    assert report["certificate"]["verified"] is True and report["auth"]["succeeded"] is True
    assert report["greeting"]["code"] == 220
    table = cli("check", *postfix_args(fresh_postfix, *login), env=env)
    assert table.returncode == 0
    assert re.search(r"^AUTH\s+succeeded as 'user1'", table.stdout, re.MULTILINE)
    assert_no_secret(sent.stdout + sent.stderr + check.stdout + table.stdout, fresh_postfix.password)


@pytest.mark.postfix
def test_postfix_failures(postfix: PostfixInstance) -> None:
    login = ["--user", postfix.username, "--password-env", "PF_PW"]
    wrong = cli("send", *postfix_args(postfix, *login), *message_args("--to", "rcpt@example.com"),
                env=environment(PF_PW="wrong-Password-1"))
    assert wrong.returncode == 5 and "535" in wrong.stderr
    assert_no_secret(wrong.stdout + wrong.stderr, "wrong-Password-1")
    untrusted = cli("check", *postfix_args(postfix, ca=False))
    assert untrusted.returncode == 4 and "CertificateError" in untrusted.stderr
    assert re.search(r"^  verifies\s+NO", untrusted.stdout, re.MULTILINE)
    relay = cli("send", *postfix_args(postfix), "--from", "ann@example.com", "--to", "x@elsewhere.test")
    assert relay.returncode == 6 and "Relay access denied" in relay.stderr



# -- options, in process ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "port"),
    [
        (["--url", "smtps://smtp.example.com", "--tls", "starttls"], 587),
        (["--url", "smtp://smtp.example.com", "--tls", "implicit"], 465),
        (["--url", "smtp://smtp.example.com", "--tls", "none"], 25),
        (["--url", "smtp://smtp.example.com:2525", "--tls", "implicit"], 2525),
        (["--url", "smtp://smtp.example.com", "--tls", "implicit", "--port", "26"], 26),
        (["--host", "smtp.example.com", "--tls", "implicit"], 465),
    ],
)
def test_tls_option_moves_only_a_port_the_url_left_out(options: list[str], port: int) -> None:
    from syncsmtp.cli import build_parser
    from syncsmtp.cli._options import build_policy
    from syncsmtp.cli._output import Console

    args = build_parser().parse_args(["check", *options])
    assert build_policy(args, Console("never"), environ={}).port == port
