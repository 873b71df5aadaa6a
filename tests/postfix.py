"""A real Postfix (with Dovecot SASL) on 127.0.0.1, started and stopped by the tests.

STARTTLS with a certificate from syncsmtp's test CA, AUTH PLAIN/LOGIN/CRAM-MD5
through Dovecot (user ``user1``, password ``pass1``), XOAUTH2 and OAUTHBEARER
through Dovecot's ``oauth2`` passdb, which asks a token-introspection endpoint
that this harness runs on 127.0.0.1 (:class:`Introspection`; its
``tokens`` maps each valid token to its user), AUTH only after STARTTLS,
and mail for @example.com delivered into a Maildir. Its own configuration
directory, queue and port: the system's Postfix instance is never touched.

Also Postfix's ``smtp-sink``, the load target of the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from syncsmtp.testing._certs import certificates

USERNAME = "user1"
PASSWORD = "pass1"


def binaries_missing() -> list[str]:
    """The programs this harness needs that are not installed."""
    return [name for name in ("postfix", "postconf", "dovecot", "smtp-sink") if not _which(name)]


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/lib/postfix/sbin")


def _master_cf_template() -> Path:
    # The package's postinst writes /etc/postfix/master.cf from this template.
    installed = Path("/etc/postfix/master.cf")
    return installed if installed.exists() else Path("/usr/share/postfix/master.cf.dist")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and wait for it; kill it if it does not end in 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_for_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Introspection:
    """An OAuth2 token-introspection endpoint (RFC 7662) on 127.0.0.1, in a
    thread: ``POST /introspect`` with ``token=T`` answers
    ``{"active": true, "username": U}`` when ``tokens[T] == U``, else
    ``{"active": false}``. ``asked`` counts the requests."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.asked = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                token = (form.get("token") or [""])[0]
                owner.asked += 1
                user = owner.tokens.get(token)
                body = json.dumps({"active": True, "username": user} if user else {"active": False})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                return None  # quiet: the tokens are in the requests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/introspect"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="introspection", daemon=True)

    def start(self) -> Introspection:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()


class PostfixInstance:
    """One private Postfix + Dovecot, in ``folder``, listening on 127.0.0.1:``port``."""

    host = "127.0.0.1"
    username = USERNAME
    password = PASSWORD

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.port = port or free_port()
        self.conf = self.folder / "conf"
        self.maildir = self.folder / "mail" / "all" / "new"
        self.ca_file = certificates("localhost").ca_file
        self.introspection = Introspection()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> PostfixInstance:
        folder, conf = self.folder, self.conf
        for sub in ("conf", "queue/private", "data", "mail", "dovecot-run"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # The postfix and nobody users must reach their folders (mkdtemp makes 0700).
        folder.chmod(0o755)
        certs = certificates("localhost")
        (conf / "cert.pem").write_bytes(certs.server_cert_pem)
        (conf / "key.pem").write_bytes(certs.server_key_pem)
        os.chmod(conf / "key.pem", 0o600)
        shutil.chown(folder / "data", "postfix", "postfix")
        shutil.chown(folder / "queue" / "private", "postfix", "postfix")
        shutil.chown(folder / "mail", "nobody", "nogroup")
        (conf / "users").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}\n")
        (conf / "dovecot.conf").write_text(self._dovecot_conf())
        (conf / "dovecot-oauth2.conf.ext").write_text(
            f"introspection_mode = post\nintrospection_url = {self.introspection.url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
        )
        self.introspection.start()
        master = _master_cf_template().read_text()
        smtpd = f"{self.port}  inet  n  -  n  -  -  smtpd"
        master = re.sub(r"(?m)^smtp\s+inet\s.*$", smtpd, master, count=1)
        (conf / "master.cf").write_text(master)
        (conf / "main.cf").write_text(self._main_cf())
        subprocess.run(["dovecot", "-c", str(conf / "dovecot.conf")], check=True, timeout=30)
        started = subprocess.run(["postfix", "start"], env=self._env(), capture_output=True, text=True,
                                 timeout=60)
        if started.returncode != 0 or not wait_for_port(self.port, 20):
            log = (folder / "maillog").read_text() if (folder / "maillog").exists() else ""
            self.stop()
            raise RuntimeError(f"postfix did not start: {started.stderr}\n{log[-2000:]}")
        return self

    def stop(self) -> None:
        subprocess.run(["postfix", "stop"], env=self._env(), capture_output=True, timeout=60)
        stopped = subprocess.run(["doveadm", "-c", str(self.conf / "dovecot.conf"), "stop"],
                                 capture_output=True, timeout=30)
        pid_file = self.folder / "dovecot-run" / "master.pid"
        if stopped.returncode != 0 and pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), 15)
        self.introspection.stop()

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- delivered mail ---------------------------------------------------------------

    def delivered(self) -> list[bytes]:
        """The messages in the Maildir, oldest first."""
        if not self.maildir.exists():
            return []
        files = sorted(self.maildir.iterdir(), key=lambda path: path.stat().st_mtime_ns)
        return [path.read_bytes() for path in files]

    def wait_for(self, count: int, seconds: float = 20.0) -> list[bytes]:
        """Block until ``count`` messages were delivered (Postfix delivers asynchronously)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            messages = self.delivered()
            if len(messages) >= count:
                return messages
            time.sleep(0.1)
        log = (self.folder / "maillog").read_text()[-3000:] if (self.folder / "maillog").exists() else ""
        raise AssertionError(f"{len(self.delivered())} messages delivered, not {count}\n{log}")

    def clear(self) -> None:
        """Remove delivered messages."""
        if self.maildir.exists():
            for path in self.maildir.iterdir():
                path.unlink()

    # -- configuration ----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, "MAIL_CONFIG": str(self.conf)}

    def _dovecot_conf(self) -> str:
        d = self.folder
        return f"""base_dir = {d}/dovecot-run
log_path = {d}/dovecot.log
protocols =
ssl = no
auth_mechanisms = plain login cram-md5 xoauth2 oauthbearer
# No delay after a refused login, and no growing penalty per address (it
# would pass Postfix's wait for Dovecot): tests refuse many logins in a row.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.conf}/users
  mechanisms = plain login cram-md5
}}
passdb {{
  driver = oauth2
  args = {self.conf}/dovecot-oauth2.conf.ext
  mechanisms = xoauth2 oauthbearer
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/tmp
}}
service auth {{
  unix_listener {d}/queue/private/auth {{
    mode = 0666
  }}
}}
"""

    def _main_cf(self) -> str:
        d = self.folder
        return f"""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
myhostname = localhost.localdomain
mydestination = localhost.localdomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_tls_cert_file = {self.conf}/cert.pem
smtpd_tls_key_file = {self.conf}/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
maillog_file_prefixes = /var, /dev/stdout, /tmp, {d}
maillog_file = {d}/maillog
virtual_mailbox_domains = example.com
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:all/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
message_size_limit = 52428800
virtual_mailbox_limit = 104857600
default_transport = discard
"""


class SmtpSink:
    """Postfix's ``smtp-sink``: accepts and discards mail as fast as it can."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, backlog: int = 256) -> None:
        self.port = port or free_port()
        self._backlog = backlog
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        binary = _which("smtp-sink")
        if binary is None:
            raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
        command = [binary, "-c", f"{self.host}:{self.port}", str(self._backlog)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "postfix"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port, 10):
            self.stop()
            raise RuntimeError("smtp-sink did not start")
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
