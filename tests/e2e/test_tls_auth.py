"""TLS (RFC 3207, RFC 8314) and AUTH (RFC 4954) against the real server, with smtplib, swaks
and a raw socket. Certificates are made at test time; see tls_helpers.py."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import IO_TIMEOUT, RawClient, assert_delivered
from tls_helpers import (OTHER, PASSWORD, USER, client_context, make_cert, peer_common_name,
                         tls_factory, tls_server)  # noqa: F401 - fixtures

MESSAGE = (b"From: User <user@test.example>\r\nTo: user2@test.example\r\nSubject: over TLS\r\n"
           b"\r\nHello over TLS.\r\n.leading dot kept\r\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- RFC 3207 / RFC 8314: TLS, then AUTH, and the message lands intact ----

@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_starttls_then_auth_delivers_intact(tls_server, mechanism):
    s = tls_server.secure_client("submission")
    assert s.has_extn("auth") and mechanism in s.esmtp_features["auth"]
    s.user, s.password = USER, PASSWORD
    code, _ = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()), initial_response_ok=True)
    assert code == 235
    assert s.sendmail(USER, [OTHER], MESSAGE) == {}
    s.quit()
    [path] = tls_server.wait_mail(OTHER)
    received = assert_delivered(path, USER, MESSAGE, rcpt=OTHER)
    # RFC 3848: ESMTPSA; the TLS version and cipher are recorded.
    assert b"with ESMTPSA id" in received, received
    assert b"(using TLSv1." in received and b"with cipher" in received, received


def test_smtplib_login_uses_the_javamail_prompts(tls_server):
    # smtplib.login() picks the first of CRAM-MD5, PLAIN, LOGIN offered; force LOGIN without an
    # initial response to see the exact prompts.
    s = tls_server.secure_client("submission")
    code, text = s.docmd("AUTH", "LOGIN")
    assert (code, text) == (334, b"VXNlcm5hbWU6")
    code, text = s.docmd(b64(USER.encode()))
    assert (code, text) == (334, b"UGFzc3dvcmQ6")
    code, text = s.docmd(b64(PASSWORD.encode()))
    assert code == 235 and text.startswith(b"2.7.0"), text
    s.quit()


def test_implicit_tls_submissions(tls_server):
    s = tls_server.client("submissions")
    code, _ = s.ehlo()
    assert code == 250 and not s.has_extn("starttls")
    s.login(USER, PASSWORD)
    assert s.sendmail(USER, [OTHER], MESSAGE) == {}
    s.quit()
    [path] = tls_server.wait_mail(OTHER)
    received = assert_delivered(path, USER, MESSAGE, rcpt=OTHER)
    assert b"with ESMTPSA id" in received


def test_ehlo_shows_the_legacy_auth_line_only_under_tls(tls_server):
    s = tls_server.client("submission")
    code, text = s.ehlo()
    assert b"STARTTLS" in text and b"AUTH" not in text, text
    s.starttls(context=client_context())
    code, text = s.ehlo()
    lines = text.decode().splitlines()
    assert "AUTH PLAIN LOGIN" in lines and "AUTH=PLAIN LOGIN" in lines, lines
    assert "STARTTLS" not in lines
    s.quit()


# ---- CVE-2011-0411: nothing pipelined after STARTTLS is executed ----

def test_command_pipelined_after_starttls_is_not_executed(tls_server):
    c = RawClient(tls_server.ports["smtp"])
    assert c.reply()[0] == 220
    c.expect("EHLO client.test.example", 250)
    # One packet: STARTTLS and a MAIL that must be thrown away with the plaintext buffer.
    c.send(b"STARTTLS\r\nMAIL FROM:<attacker@evil.example>\r\n")
    code, lines = c.reply()
    assert code == 220, lines
    assert c.buf == b"", f"the pipelined MAIL got a plaintext reply: {c.buf!r}"
    tls = client_context().wrap_socket(c.sock, server_hostname="mx.test.example")
    tls.settimeout(IO_TIMEOUT)
    c.sock = tls
    c.expect("EHLO client.test.example", 250)
    # Had the MAIL been executed, RCPT would be accepted (250) instead of 503.
    code, lines = c.cmd("RCPT TO:<user2@test.example>")
    assert code == 503, lines
    c.expect("QUIT", 221)
    c.close()


# ---- AUTH refusals ----

def test_auth_before_tls_is_refused(tls_server):
    c = RawClient(tls_server.ports["smtp"])
    c.reply()
    lines = c.expect("EHLO client.test.example", 250)
    assert not any("AUTH" in l for l in lines), lines
    # RFC 4954 6: 538 5.7.11 encryption required.
    lines = c.expect("AUTH PLAIN " + b64(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()), 538)
    assert "5.7.11" in lines[0]
    c.close()


def test_wrong_password_delay_and_disconnect(tls_factory):
    srv = tls_factory(auth={"failure_delay": "100ms", "failure_delay_max": "1s",
                            "max_failures": 3})
    s = srv.secure_client("submission")
    started = time.monotonic()
    # One attempt each (smtplib.login() would try PLAIN and then LOGIN).
    for attempt in (1, 2):
        code, text = s.docmd("AUTH", "PLAIN " + b64(b"\0" + USER.encode() + b"\0wrong password"))
        assert code == 535 and text.startswith(b"5.7.8"), text
    # Delays of 100 ms and then 200 ms (doubling); well below a second in total.
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5, elapsed
    code, text = s.docmd("AUTH", "PLAIN " + b64(b"\0" + USER.encode() + b"\0nope"))
    assert code == 421, text
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()
    log = srv.log()
    assert "authentication failed" in log and "client=127.0.0.1" in log
    assert "too many authentication failures" in log
    # Never a password or an AUTH payload in the log.
    for secret in ("wrong password", PASSWORD, b64(b"\0" + USER.encode() + b"\0nope"), "nope"):
        assert secret not in log, secret


def test_failed_auth_across_connections_is_rate_limited_per_address(tls_factory):
    """Issue #13: `max_failures` ends one connection; `auth_failure_rate_limit` stops a client
    that reconnects to guess again (failed attempts per minute per address)."""
    srv = tls_factory(auth={"max_failures": 10},
                      smtp={"limit_exceptions": [], "auth_failure_rate_limit": 3})
    codes = []
    for _ in range(3):  # bounded: 3 within the limit, the 4th over it
        s = srv.secure_client("submission")
        code, _ = s.docmd("AUTH", "PLAIN " + b64(b"\0" + USER.encode() + b"\0wrong"))
        codes.append(code)
        s.close()
    s = srv.secure_client("submission")
    code, text = s.docmd("AUTH", "PLAIN " + b64(b"\0" + USER.encode() + b"\0wrong"))
    assert codes == [535, 535, 535] and code == 421, (codes, code, text)
    assert b"Too many failed AUTH attempts from your address" in text, text
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()
    assert "too many failed AUTH attempts from this address" in srv.log()


def test_cancel_with_star_answers_501(tls_server):
    s = tls_server.secure_client("submission")
    code, _ = s.docmd("AUTH", "LOGIN")
    assert code == 334
    code, text = s.docmd("*")
    assert code == 501, text
    s.login(USER, PASSWORD)  # the session goes on
    s.quit()


# ---- relay control and submission ----

def test_relay_refused_without_auth(tls_server):
    s = tls_server.client("smtp")
    s.ehlo()
    # Local delivery is fine without AUTH...
    assert s.sendmail("someone@remote.example", [OTHER], MESSAGE) == {}
    # ...relaying is not: 550 5.7.1 (RFC 5321 3.6.2, RFC 3463 X.7.1).
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        s.sendmail("someone@remote.example", ["friend@remote.example"], MESSAGE)
    code, text = e.value.recipients["friend@remote.example"]
    assert code == 550 and text.startswith(b"5.7.1"), text
    s.quit()


def test_submission_requires_auth(tls_server):
    for kind in ("submission", "submissions"):
        s = tls_server.secure_client(kind)
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail(USER, [OTHER], MESSAGE)
        assert e.value.smtp_code == 530 and e.value.smtp_error.startswith(b"5.7.0"), kind
        s.quit()


def test_relay_allowed_after_auth_is_queued(tls_server):
    s = tls_server.secure_client("submission")
    s.login(USER, PASSWORD)
    assert s.sendmail(USER, ["friend@remote.example"], MESSAGE) == {}
    s.quit()
    # No outbound delivery yet: it waits in the queue as a remote recipient.
    tls_server.wait_log("queued")
    assert not tls_server.all_delivered()
    assert not tls_server.spool_empty()


def test_sender_spoofing_refused_alias_allowed(tls_server):
    s = tls_server.secure_client("submission")
    s.login(USER, PASSWORD)
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        s.sendmail(OTHER, [OTHER], MESSAGE)
    assert e.value.smtp_code == 553 and e.value.smtp_error.startswith(b"5.7.1")
    # An alias whose member is the user may be used.
    assert s.sendmail("sales@test.example", [OTHER], MESSAGE) == {}
    s.quit()


def test_trusted_network_relays_without_auth(tls_factory):
    srv = tls_factory(smtp={"relay_networks": ["127.0.0.0/8"]})
    s = srv.client("smtp")
    s.ehlo()
    assert s.sendmail("a@remote.example", ["b@remote.example"], MESSAGE) == {}
    s.quit()


# ---- certificate reload without a restart ----

def test_certificate_reload_on_sighup(tls_server):
    first = ssl_cn(tls_server.ports["submissions"])
    assert first == "mx.test.example"
    make_cert(tls_server.workdir, "renewed.test.example")
    tls_server.signal(signal.SIGHUP)
    tls_server.wait_log("TLS certificate reloaded")
    assert ssl_cn(tls_server.ports["submissions"]) == "renewed.test.example"
    assert tls_server.running()


def test_certificate_reload_on_file_change(tls_factory):
    srv = tls_factory(tls={"reload_interval": "100ms"})
    make_cert(srv.workdir, "changed.test.example")
    srv.wait_log("certificate files changed")
    assert ssl_cn(srv.ports["submissions"]) == "changed.test.example"
    # STARTTLS uses the new certificate too.
    s = srv.client("smtp")
    s.ehlo()
    s.starttls(context=client_context())
    assert peer_common_name(s.sock) == "changed.test.example"
    s.quit()


def ssl_cn(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with client_context().wrap_socket(raw, server_hostname="mx.test.example") as tls:
            return peer_common_name(tls)


def test_only_tls_12_and_13(tls_server):
    for version, ok in ((ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)):
        ctx = client_context()
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tls_server.ports["submissions"]),
                                      timeout=IO_TIMEOUT) as raw:
            with ctx.wrap_socket(raw) as tls:
                assert tls.version() == version.name.replace("v1_", "v1.")


# ---- swaks, a client nobody here wrote ----

swaks_missing = shutil.which("swaks") is None


@pytest.mark.skipif(swaks_missing, reason="swaks is not installed")
@pytest.mark.parametrize("kind,tls_flag", [("submission", "--tls"), ("submissions", "--tlsc")])
def test_swaks_tls_auth_login(tls_server, kind, tls_flag):
    body = tls_server.workdir / f"swaks-{kind}.eml"
    body.write_bytes(MESSAGE)
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(tls_server.ports[kind]), tls_flag,
         "--auth", "LOGIN", "--auth-user", USER, "--auth-password", PASSWORD,
         "--helo", "client.test.example", "--from", USER, "--to", OTHER,
         "--data", f"@{body}", "--timeout", "10"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, text + out.stderr.decode(errors="replace")
    if "TLS not available" in text:
        pytest.fail("swaks lacks Net::SSLeay (apt-get install libnet-ssleay-perl)")
    assert "334 VXNlcm5hbWU6" in text and "334 UGFzc3dvcmQ6" in text, text
    assert "235 2.7.0" in text, text
    [path] = tls_server.wait_mail(OTHER)
    assert b"with ESMTPSA id" in path.read_bytes()
