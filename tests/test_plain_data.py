"""Policy, message preparation, results and errors: the layers with no Twisted."""

from __future__ import annotations

import email.message
import pickle
import subprocess
import sys

import pytest

import syncsmtp
from syncsmtp.message import prepare_message


def make_message(**headers: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = headers.pop("From", "Ann <ann@example.com>")
    message["To"] = headers.pop("To", "bob@example.com")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message["Subject"] = "hello"
    message.set_content("body\n")
    return message


# -- import cost ------------------------------------------------------------------


def test_import_starts_no_reactor_and_loads_no_twisted() -> None:
    code = (
        "import sys, threading, syncsmtp, syncsmtp.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'crochet'))))\n"
        "print(threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, threads = out.stdout.splitlines()
    assert modules == "[]"
    assert threads == "1"


# -- Policy -----------------------------------------------------------------------


def test_policy_defaults_follow_tls() -> None:
    assert syncsmtp.Policy(host="h").port == 587
    assert syncsmtp.Policy(host="h", tls="implicit").port == 465
    assert syncsmtp.Policy(host="h", tls="none").port == 25
    assert syncsmtp.Policy(host="h", tls="opportunistic").port == 587


@pytest.mark.parametrize(
    ("policy", "tls", "port"),
    [
        (syncsmtp.Policy(host="h"), "implicit", 465),
        (syncsmtp.Policy(host="h", tls="implicit"), "starttls", 587),
        (syncsmtp.Policy(host="h", tls="implicit"), "none", 25),
        (syncsmtp.Policy(host="h", port=None), "implicit", 465),
        (syncsmtp.Policy(host="h", port=587), "implicit", 587),  # given: kept
        (syncsmtp.Policy(host="h", port=2525), "implicit", 2525),
        (syncsmtp.Policy.from_url("smtps://h"), "starttls", 587),
        (syncsmtp.Policy.from_url("smtp://h"), "implicit", 465),
        (syncsmtp.Policy.from_url("smtp://h?tls=implicit"), "implicit", 465),
        (syncsmtp.Policy.from_url("smtps://h:465"), "starttls", 465),  # given in the URL: kept
        (syncsmtp.Policy(host="h").with_options(username="u"), "implicit", 465),
        (syncsmtp.Policy(host="h").with_options(port=2525), "implicit", 2525),
        (syncsmtp.Policy(host="h", port=2525).with_options(port=None), "implicit", 465),
    ],
)
def test_with_options_tls_moves_a_default_port_only(policy: syncsmtp.Policy, tls: str, port: int) -> None:
    changed = policy.with_options(tls=tls)
    assert changed.port == port and type(changed.port) is int
    assert changed.effective_port == port and changed.address == f"h:{port}"
    assert pickle.loads(pickle.dumps(policy)).with_options(tls=tls).port == port


def test_a_default_port_and_the_same_port_given_are_equal_policies() -> None:
    default, given = syncsmtp.Policy(host="h"), syncsmtp.Policy(host="h", port=587)
    assert default == given and hash(default) == hash(given) and repr(default) == repr(given)


def test_policy_takes_only_host_by_position() -> None:
    assert syncsmtp.Policy("smtp.example.com").host == "smtp.example.com"
    with pytest.raises(TypeError, match="positional"):
        syncsmtp.Policy("smtp.example.com", 25, "none")  # type: ignore[misc]


def test_policy_repr_hides_password() -> None:
    policy = syncsmtp.Policy(host="h", username="me", password="s3cret-value")
    assert "s3cret-value" not in repr(policy)
    assert "s3cret-value" not in str(policy)
    assert "<redacted>" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"host": ""}, "host"),
        ({"host": "a b"}, "host"),
        ({"host": "h\r\nRCPT"}, "host"),
        ({"host": "h", "tls": "ssl"}, "tls"),
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "port": "25"}, "port"),
        ({"host": "h", "password": "p"}, "without a username"),
        ({"host": "h", "username": "u\r\n", "password": "p"}, "CR"),
        ({"host": "h", "tls": "none", "username": "u", "password": "p"}, "plaintext"),
        ({"host": "h", "require_auth": True}, "require_auth"),
        ({"host": "h", "auth_mechanisms": ("XOAUTH2",)}, "auth_mechanisms"),
        ({"host": "h", "auth_mechanisms": "PLAIN"}, "auth_mechanisms"),
        ({"host": "h", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"host": "h", "local_hostname": "a b"}, "local_hostname"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        syncsmtp.Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_allows_plaintext_auth_only_when_asked() -> None:
    policy = syncsmtp.Policy(host="h", tls="none", username="u", password="p", allow_plaintext_auth=True)
    assert policy.auth_required


def test_policy_from_url() -> None:
    policy = syncsmtp.Policy.from_url(
        "smtp+starttls://us%40er:p%3Ass@smtp.example.com:2525?auth_mechanisms=plain,login&verify=false"
    )
    assert (policy.host, policy.port, policy.tls) == ("smtp.example.com", 2525, "starttls")
    assert (policy.username, policy.password) == ("us@er", "p:ss")
    assert policy.auth_mechanisms == ("PLAIN", "LOGIN")
    assert policy.verify is False
    assert syncsmtp.Policy.from_url("smtps://h").port == 465
    assert syncsmtp.Policy.from_url("smtp://h").tls == "starttls"
    assert syncsmtp.Policy.from_url("smtp+plain://[::1]:25").host == "::1"
    assert syncsmtp.Policy.from_url("smtp+opportunistic://h").tls == "opportunistic"


@pytest.mark.parametrize(
    "url", ["http://h", "smtp://", "smtp://h?bogus=1", "smtp://h?verify=maybe", "smtp://h:99999"]
)
def test_policy_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        syncsmtp.Policy.from_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://usr9x:Hunter2Secret/Prefix@smtp.example.com:587",  # was: "...as 'Hunter2Secret'"
        "smtp://usr9x:4711/Secret@smtp.example.com",  # was: host "user", port 4711, no password
        "smtp://usr9x:Hunter2?Secret@smtp.example.com",
        "smtp://usr9x:Hunter2#Secret@smtp.example.com",
        "smtp://usr9x:Hunter2@Secret@smtp.example.com",
        "smtp://usr9x:Hunter2 Secret@smtp.example.com",
        "smtp://usr9x:12?Secret@smtp.example.com",  # was: "unknown SMTP URL option 'Secret@...'"
    ],
)
def test_policy_from_url_errors_never_repeat_the_userinfo(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        syncsmtp.Policy.from_url(url)
    text = str(caught.value) + repr(caught.value)
    for piece in ("Hunter2", "Secret", "4711", "usr9x"):
        assert piece not in text
    assert "percent-encoded" in text


def test_policy_from_url_takes_a_percent_encoded_password_and_tls_ciphers() -> None:
    policy = syncsmtp.Policy.from_url("smtp://usr9x:a%2Fb%3Fc%23d%40e@smtp.example.com?tls_ciphers=DEFAULT")
    assert policy.password == "a/b?c#d@e" and policy.host == "smtp.example.com"
    assert policy.tls_ciphers == "DEFAULT"


# -- messages ---------------------------------------------------------------------


def test_envelope_from_headers_and_bcc_stripped() -> None:
    message = make_message(To='bob@example.com, "Doe, Jane" <jane@example.com>', Cc="c@example.com",
                           Bcc="hidden@example.com")
    envelope = prepare_message(message)
    assert envelope.sender == "ann@example.com"
    assert envelope.recipients == ("bob@example.com", "jane@example.com", "c@example.com",
                                   "hidden@example.com")
    assert b"hidden@example.com" not in envelope.data
    assert b"Bcc" not in envelope.data
    assert message["Bcc"] == "hidden@example.com", "the caller's message must be left alone"


def test_sender_header_wins_and_resent_headers_are_used() -> None:
    message = make_message(Sender="agent@example.com")
    assert prepare_message(message).sender == "agent@example.com"
    resent = make_message(Resent_Date="Mon, 1 Jan 2024 00:00:00 +0000", Resent_From="r@example.com",
                          Resent_To="rt@example.com")
    envelope = prepare_message(resent)
    assert (envelope.sender, envelope.recipients) == ("r@example.com", ("rt@example.com",))


def test_message_id_and_date_added_when_missing() -> None:
    envelope = prepare_message(make_message())
    assert envelope.message_id and envelope.message_id.endswith("@example.com>")
    assert b"\r\nMessage-ID: " + envelope.message_id.encode() in b"\r\n" + envelope.data
    assert envelope.data.startswith(b"Date: ")
    kept = prepare_message(make_message(Message_ID="<given@example.com>"))
    assert kept.message_id == "<given@example.com>"
    assert kept.data.count(b"Message-ID") == 1


def test_explicit_envelope_overrides_headers() -> None:
    envelope = prepare_message(make_message(), sender="", recipients="x@example.com")
    assert (envelope.sender, envelope.recipients) == ("", ("x@example.com",))


def test_bytes_and_str_need_an_envelope() -> None:
    with pytest.raises(syncsmtp.MessageError, match="sender= and recipients="):
        prepare_message(b"Subject: x\r\n\r\nbody")
    envelope = prepare_message("Subject: é\n\nbody", sender="a@example.com", recipients=["b@example.com"])
    assert envelope.eight_bit and envelope.data == "Subject: é\n\nbody".encode()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sender": "a@example.com\r\nRCPT TO:<evil@example.com>", "recipients": ["b@example.com"]},
        {"sender": "a@example.com", "recipients": ["b@example.com\nDATA"]},
        {"sender": "a@example.com", "recipients": []},
        {"sender": "a@example.com", "recipients": [""]},
        {"sender": "a@ex ample.com", "recipients": ["b@example.com"]},
    ],
)
def test_bad_envelopes_are_message_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(syncsmtp.MessageError):
        prepare_message(b"x", **kwargs)  # type: ignore[arg-type]


def test_quoted_local_parts_are_valid_envelope_addresses() -> None:
    envelope = prepare_message(b"x", sender='"ann smith"@example.com',
                               recipients=['Bob <"bob \\"b\\" jones"@example.com>'])
    assert envelope.sender == '"ann smith"@example.com'
    assert envelope.recipients == ('"bob \\"b\\" jones"@example.com',)
    for bad in ['"un"closed"@example.com', '"tab\tinside"@example.com', '"ok"@exa mple.com']:
        with pytest.raises(syncsmtp.MessageError):
            prepare_message(b"x", sender="a@example.com", recipients=[bad])


def test_header_injection_is_refused() -> None:
    message = email.message.Message()  # compat32 lets a raw CR/LF through
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "hi\r\nBcc: victim@example.com"
    with pytest.raises(syncsmtp.MessageError, match="header injection"):
        prepare_message(message)
    folded = email.message.Message()
    folded["From"] = "a@example.com"
    folded["To"] = "b@example.com"
    folded["Subject"] = "a long\r\n folded subject"
    assert prepare_message(folded).recipients == ("b@example.com",)


def test_no_recipients_and_wrong_type() -> None:
    message = make_message()
    del message["To"]
    with pytest.raises(syncsmtp.MessageError, match="no recipients"):
        prepare_message(message)
    with pytest.raises(syncsmtp.MessageError, match="EmailMessage, bytes or str"):
        prepare_message(42)  # type: ignore[arg-type]


def test_a_message_the_email_package_cannot_write_is_a_message_error() -> None:
    text_with_parts = make_message()
    text_with_parts.set_payload([make_message()])  # a list of parts under text/plain
    stray_string = make_message()
    stray_string.make_mixed()
    stray_string.get_payload().append("not a part")
    non_ascii_payload = make_message()
    non_ascii_payload.set_payload("caf\u00e9")  # str payload with no charset or encoding
    for message in (text_with_parts, stray_string, non_ascii_payload):
        with pytest.raises(syncsmtp.MessageError, match="cannot be serialised"):
            prepare_message(message)


def test_international_addresses_are_flagged() -> None:
    envelope = prepare_message(make_message(To="jürgen@exämple.com"))
    assert envelope.international


# -- results and errors -------------------------------------------------------------


def test_reply_parses_enhanced_codes() -> None:
    reply = syncsmtp.Reply.parse(550, b"5.1.1 No such user\n5.1.1 really")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "No such user\nreally")
    assert syncsmtp.Reply.parse(250, "2.0.0").text == ""
    one_line = syncsmtp.Reply.parse(250, b"2.0.0  Ok: queued as 4XyZ")
    assert (one_line.enhanced, one_line.text) == ("2.0.0", "Ok: queued as 4XyZ")
    uneven = syncsmtp.Reply.parse(250, "2.0.0\nsecond line 2.0.0")
    assert (uneven.enhanced, uneven.text) == ("2.0.0", "\nsecond line 2.0.0")
    mismatched = syncsmtp.Reply.parse(250, "5.0.0 odd")
    assert mismatched.enhanced is None
    assert syncsmtp.Reply.parse(421, "busy").transient


def test_result_renders_without_secrets() -> None:
    result = syncsmtp.SendResult(
        accepted=("a@example.com",),
        refused={"b@example.com": syncsmtp.Reply(550, "5.1.1", "No <such> user")},
        reply=syncsmtp.Reply(250, "2.0.0", "queued as ABC"),
        message_id="<m@example.com>",
        elapsed=0.01,
        tls=syncsmtp.TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        auth_mechanism="PLAIN",
        host="smtp.example.com",
        port=587,
    )
    html = result._repr_html_()
    assert "&lt;such&gt;" in html and "<table" in html
    assert "queued as ABC" in str(result)
    with pytest.raises(TypeError):
        result.refused["x"] = syncsmtp.Reply(250, None, "")  # type: ignore[index]


def test_error_tree_matches_the_design() -> None:
    assert issubclass(syncsmtp.ConnectError, ConnectionError)
    assert issubclass(syncsmtp.SendTimeout, TimeoutError)
    assert issubclass(syncsmtp.MessageError, ValueError)
    assert issubclass(syncsmtp.CertificateError, syncsmtp.TLSFailedError)
    for name in ("TLSRequiredError", "TLSFailedError"):
        assert issubclass(getattr(syncsmtp, name), syncsmtp.TLSError)
    for name in ("AuthRequiredError", "AuthDeclinedError", "AuthMalformedChallengeError",
                 "AuthServerError"):
        assert issubclass(getattr(syncsmtp, name), syncsmtp.AuthError)
    for name in ("SenderRefused", "RecipientsRefused", "MessageRefused"):
        assert issubclass(getattr(syncsmtp, name), syncsmtp.RefusedError)


def test_errors_pickle_with_their_details() -> None:
    reply = syncsmtp.Reply(451, "4.3.0", "try later")
    error = syncsmtp.RecipientsRefused("all refused", refused={"a@example.com": reply}, reply=reply,
                                       host="h", stage="rcpt")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is syncsmtp.RecipientsRefused
    assert (copy.refused["a@example.com"], copy.stage, copy.host, str(copy)) == (reply, "rcpt", "h",
                                                                                  "all refused")
    assert copy.transient
    timeout = pickle.loads(pickle.dumps(syncsmtp.SendTimeout("late", stage="end-of-data",
                                                             maybe_delivered=True)))
    assert timeout.maybe_delivered and timeout.transient


def test_send_rejects_bad_arguments_before_connecting() -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", port=9, tls="none")
    with pytest.raises(TypeError):
        syncsmtp.send(make_message(), "smtp://h")  # type: ignore[arg-type]
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            syncsmtp.send(make_message(), policy, timeout=bad)
    with pytest.raises(syncsmtp.MessageError):
        syncsmtp.send(b"x", policy)


def test_message_id_domain_survives_odd_senders() -> None:
    for sender, domain in [("a@bücher.example", "@xn--bcher-kva.example>"),
                           ("a@" + "x" * 70 + ".com", "@localhost>")]:
        envelope = prepare_message(make_message(From=sender))
        assert envelope.message_id is not None and envelope.message_id.endswith(domain)
