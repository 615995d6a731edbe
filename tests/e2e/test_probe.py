"""`yizhan probe HOST[:PORT]` against real servers on 127.0.0.1: yizhan itself (plain, STARTTLS
with a certificate from a CA made here, implicit TLS, AUTH, a test message that must land in
the Maildir) and a private Postfix (two of them: one that relays for loopback, one that does
not). Each report card is checked against what that server is configured to do, and the exit
status against the card.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from ca_helpers import make_ca_and_leaf
from conftest import HOSTNAME
from postfix_helpers import POSTFIX, Postfix
from tls_helpers import PASSWORD, USER, TlsServer

PROBE_TIMEOUT = 90


def probe(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "probe", *args], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT)


def card(done: subprocess.CompletedProcess) -> dict[str, dict]:
    """The report card of a `--format json` run, by check."""
    value = json.loads(done.stdout)
    return {c["check"]: c for c in value["card"]["checks"]}


def outcomes(done: subprocess.CompletedProcess) -> dict[str, str]:
    return {k: c["outcome"] for k, c in card(done).items()}


@pytest.fixture
def tls_yizhan(yizhan_bin, tmp_path):
    """A yizhan with smtp, submission and submissions listeners whose certificate comes from
    a CA made here; yields (server, ca.pem)."""
    workdir = tmp_path / "tls"
    workdir.mkdir()
    srv = TlsServer(yizhan_bin, workdir, {}, {}, {})
    ca, cert, key = make_ca_and_leaf(workdir, HOSTNAME)
    # Written into the files the server was configured with (keeping their owner and mode).
    srv.cert.write_bytes(cert.read_bytes())
    srv.key.write_bytes(key.read_bytes())
    srv.start()
    yield srv, ca
    srv.kill()


def test_a_plain_yizhan_passes_and_says_why(server_factory, yizhan_bin):
    srv = server_factory(smtp={"max_message_size": 5_000_000})
    done = probe(yizhan_bin, f"127.0.0.1:{srv.port}", "--format", "json",
                 "--relay-test", "someone@elsewhere.example", "--helo", "probe.test")
    assert done.returncode == 0, done.stdout + done.stderr
    got = outcomes(done)
    assert got["greeting"] == "pass" and got["ehlo"] == "pass"
    # No [tls] in this configuration: STARTTLS is not offered, which is worth a warning.
    assert got["starttls"] == "warn"
    assert "5000000 octets" in card(done)["size"]["detail"]
    assert got["smtputf8"] == "pass" and got["pipelining"] == "pass"
    assert got["relay"] == "pass", card(done)["relay"]
    for check in ("postmaster", "unknown_command", "rcpt_before_mail", "long_line", "quit"):
        assert got[check] == "pass", (check, card(done)[check])
    assert "tls_version" not in got and "certificate_chain" not in got
    # The relay test tried RFC 821's source route and the % hack too.
    relay = card(done)["relay"]["detail"]
    assert f"<@{HOSTNAME}:someone@elsewhere.example>" in relay
    assert f"<someone%elsewhere.example@{HOSTNAME}>" in relay
    # The explained session is there too, line by line.
    session = json.loads(done.stdout)["session"]
    assert session["entries"][0]["text"].startswith("220 ")
    assert any(e["text"] == "XYZZY" for e in session["entries"])


def test_a_yizhan_that_relays_for_loopback_fails_the_relay_test(server_factory, yizhan_bin):
    srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]})
    done = probe(yizhan_bin, f"127.0.0.1:{srv.port}", "--format", "json", "--brief",
                 "--relay-test", "someone@elsewhere.example")
    assert done.returncode == 1, done.stdout + done.stderr
    assert outcomes(done)["relay"] == "fail"
    assert "session" not in json.loads(done.stdout)  # --brief: only the card


def test_starttls_auth_and_a_test_message(tls_yizhan, yizhan_bin, tmp_path):
    srv, ca = tls_yizhan
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    common = ["--starttls", "--tls-name", HOSTNAME, "--ca-file", str(ca), "--user", USER,
              "--password-file", str(secret), "--send-to", USER]
    for mechanism in ("PLAIN", "LOGIN"):
        done = probe(yizhan_bin, f"127.0.0.1:{srv.ports['submission']}", *common,
                     "--auth-mechanism", mechanism, "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        got = outcomes(done)
        for check in ("starttls", "tls_version", "certificate_expiry", "certificate_name",
                      "certificate_chain", "auth_in_clear", "auth", "message"):
            assert got[check] == "pass", (check, card(done)[check])
        assert mechanism in card(done)["auth"]["detail"]
        # The password, and every base64 form of it, appear nowhere.
        for text in (done.stdout, done.stderr):
            assert PASSWORD not in text
            assert base64.b64encode(PASSWORD.encode()).decode() not in text
            plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            assert plain not in text
    mail = srv.wait_mail(USER, count=2)
    assert b"Subject: yizhan probe" in mail[0].read_bytes()
    # The text form says the same, in Chinese when asked.
    done = probe(yizhan_bin, f"127.0.0.1:{srv.ports['submission']}", "--starttls",
                 "--tls-name", HOSTNAME, "--ca-file", str(ca), "--lang", "zh", "--brief")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "证书链到可信的证书颁发机构" in done.stdout and "服务器通过了检查" in done.stdout


def test_the_certificate_is_judged(tls_yizhan, yizhan_bin):
    srv, ca = tls_yizhan
    port = srv.ports["submissions"]
    # Without the CA, the chain is not trusted; under another name, the name does not match.
    done = probe(yizhan_bin, f"127.0.0.1:{port}", "--tls", "--tls-name", "other.example",
                 "--format", "json", "--brief")
    assert done.returncode == 1, done.stdout + done.stderr
    got = outcomes(done)
    assert got["certificate_chain"] == "fail" and got["certificate_name"] == "fail"
    assert "not trusted" in card(done)["certificate_chain"]["detail"]
    assert got["auth_in_clear"] == "pass"  # implicit TLS: nothing in clear text
    done = probe(yizhan_bin, f"127.0.0.1:{port}", "--tls", "--tls-name", HOSTNAME,
                 "--ca-file", str(ca), "--brief")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The server passed." in done.stdout


def test_auth_is_never_sent_in_clear_unless_asked(server_factory, yizhan_bin, tmp_path):
    srv = server_factory()
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    done = probe(yizhan_bin, f"127.0.0.1:{srv.port}", "--user", "u@test.example",
                 "--password-file", str(secret))
    assert done.returncode == 2 and "--auth-in-clear" in done.stderr
    # A server that cannot be reached: exit 69, said once.
    srv.stop()
    done = probe(yizhan_bin, f"127.0.0.1:{srv.port}", "--timeout", "3s")
    assert done.returncode == 69 and done.stderr.count("cannot connect") == 1, done.stderr


@pytest.mark.skipif(not Path(POSTFIX).exists(), reason="Postfix is not installed")
@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="a private Postfix needs root")
def test_postfix_report_cards(tmp_path, yizhan_bin):
    """Postfix as configured: SIZE from message_size_limit, no SMTPUTF8 (smtputf8_enable =
    no), STARTTLS with a CA-signed certificate; an open relay for loopback when mynetworks
    holds it, a closed one when it does not."""
    ca, cert, key = make_ca_and_leaf(tmp_path, "pf-mx.test")
    tls = [f"smtpd_tls_cert_file = {cert}", f"smtpd_tls_key_file = {key}",
           "message_size_limit = 12345678"]
    closed = Postfix(tmp_path / "closed", tls=True,
                     extra=tls + ["mynetworks = 192.0.2.0/24", "mydestination = pf-mx.test",
                                  "local_recipient_maps ="])
    open_ = Postfix(tmp_path / "open", tls=False, extra=["message_size_limit = 12345678"])
    started = []
    try:
        for pf in (closed, open_):
            started.append(pf)
            pf.start()
        done = probe(yizhan_bin, f"127.0.0.1:{closed.port}", "--starttls", "--tls-name",
                     "pf-mx.test", "--ca-file", str(ca), "--relay-test",
                     "someone@elsewhere.example", "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        got, details = outcomes(done), card(done)
        assert "12345678 octets" in details["size"]["detail"]
        assert got["smtputf8"] == "info" and "not offered" in details["smtputf8"]["detail"]
        for check in ("starttls", "certificate_chain", "certificate_name", "relay",
                      "pipelining", "postmaster", "unknown_command", "rcpt_before_mail",
                      "long_line", "quit"):
            assert got[check] == "pass", (check, details[check])
        done = probe(yizhan_bin, f"127.0.0.1:{open_.port}", "--relay-test",
                     "someone@elsewhere.example", "--format", "json", "--brief")
        assert done.returncode == 1, done.stdout + done.stderr
        got = outcomes(done)
        assert got["relay"] == "fail" and got["starttls"] == "warn"
    finally:
        for pf in started:
            pf.stop()
