"""Two yizhan instances and a test DNS server (tier T3 of DESIGN.md).

A (a.example) listens on 127.0.0.2, B (mx.b.example, domain b.example) on 127.0.0.3. A finds B
through MX records served by a dnslib server on 127.0.0.1 (`[delivery] dns_servers`) and
connects to B's port (`[delivery] remote_port`). Nothing touches the internet or system DNS.

Covered (issue #5): a message submitted with AUTH to A arrives in B's Maildir with two
Received: lines; B down means A retries and delivers when B is back; a 550 from B makes an
RFC 3464 report in the sender's Maildir on A, checked field by field with the email package;
TURN after AUTH delivers the owner's held mail; ETRN starts a queue run for a domain; an alias
member in a foreign domain gets 251 and the copy is relayed.
"""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import time

import pytest

from conftest import DELIVERY_TIMEOUT, wait_until
from outbound_helpers import (
    LoopbackServer,
    Line,
    TestDns,
    config,
    free_port,
    hash_password,
)

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
PASSWORD = "correct horse"


@pytest.fixture
def dns():
    server = TestDns({
        "b.example": [("MX", (10, "mx.b.example"))],
        "mx.b.example": [("A", B_HOST)],
    })
    yield server
    server.stop()


@pytest.fixture(scope="module")
def password_hash(yizhan_bin):
    return hash_password(yizhan_bin, PASSWORD)


@pytest.fixture
def pair(yizhan_bin, tmp_path, dns, password_hash):
    """(make_a, b): B is made (not started) on a fixed port; make_a(**queue) starts A."""
    made = []
    b_port = free_port(B_HOST)
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = LoopbackServer(yizhan_bin, b_dir, config(
        "mx.b.example", b_dir / "data", [(f"{B_HOST}:{b_port}", "smtp")],
        """
[[domain]]
name = "b.example"

[[mailbox]]
address = "bob@b.example"
""",
    ))
    made.append(b)

    def make_a(retry_initial="1s", retry_max_backoff="2s", extra_smtp=""):
        a_dir = tmp_path / "a"
        a_dir.mkdir()
        a = LoopbackServer(yizhan_bin, a_dir, config(
            "a.example", a_dir / "data",
            [(f"{A_HOST}:0", "submission"), (f"{A_HOST}:0", "smtp")],
            f"""
[smtp]
turn = true
etrn = true
{extra_smtp}

[auth]
require_tls = false

[queue]
retry_initial = "{retry_initial}"
retry_max_backoff = "{retry_max_backoff}"

[delivery]
remote_port = {b_port}
dns_servers = ["127.0.0.1:{dns.port}"]
dns_timeout = "2s"
connect_timeout = "2s"
connection_idle = 0

[[domain]]
name = "a.example"

[[mailbox]]
address = "alice@a.example"
password = "{password_hash}"

[[mailbox]]
address = "carol@a.example"
password = "{password_hash}"
turn_domains = ["client.example"]

[[alias]]
address = "fwd@a.example"
members = ["bob@b.example"]
""",
        ))
        made.append(a)
        return a.start()

    yield make_a, b
    for srv in made:
        srv.kill()


def submit(a: LoopbackServer, rcpts: list[str], subject: str, user="alice@a.example",
           sender="alice@a.example") -> bytes:
    body = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@a.example>\r\n\r\nHello from A.\r\n").encode()
    with smtplib.SMTP(*a.addresses[0], local_hostname="client.a.example", timeout=10) as s:
        s.login(user, PASSWORD)
        refused = s.sendmail(sender, rcpts, body)
        assert refused == {}
    return body


def received_lines(raw: bytes) -> list[str]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return msg.get_all("Received") or []


def test_auth_submission_to_a_arrives_at_b_with_two_received_lines(pair):
    make_a, b = pair
    b.start()
    a = make_a()
    submit(a, ["bob@b.example"], "two hops")
    [path] = b.wait_mail("bob@b.example")
    raw = path.read_bytes()
    received = received_lines(raw)
    assert len(received) == 2, received
    # RFC 5321 4.4: the newest trace line first: B's, then A's (ESMTPA: authenticated).
    # (A does not bind a source address: the kernel picks 127.0.0.1 towards 127.0.0.3.)
    assert "by mx.b.example" in received[0] and "from a.example" in received[0], received[0]
    assert "by a.example" in received[1] and "ESMTPA" in received[1], received[1]
    assert raw.startswith(b"Return-Path: <alice@a.example>\n")
    assert raw.endswith(b"Hello from A.\n")
    wait_until(lambda: a.spool_empty() or None, DELIVERY_TIMEOUT, "A's spool to empty")


def test_b_down_then_back_a_retries_and_delivers(pair):
    make_a, b = pair
    a = make_a(retry_initial="1s", retry_max_backoff="1s")
    submit(a, ["bob@b.example"], "retry me")
    wait_until(lambda: "delivery deferred" in a.log() or None, DELIVERY_TIMEOUT,
               "A to defer the message while B is down")
    assert not a.spool_empty()
    b.start()
    [path] = b.wait_mail("bob@b.example", timeout=15)
    assert b"Subject: retry me" in path.read_bytes()
    wait_until(lambda: a.spool_empty() or None, DELIVERY_TIMEOUT, "A's spool to empty")


def test_550_from_b_gives_an_rfc3464_report_in_the_senders_maildir(pair):
    make_a, b = pair
    b.start()
    a = make_a()
    original = submit(a, ["nobody@b.example"], "bounce me")
    [path] = a.wait_mail("alice@a.example")
    raw = path.read_bytes()
    # The report has a null reverse-path (RFC 5321 4.5.5), kept as Return-Path at delivery.
    assert raw.startswith(b"Return-Path: <>\n"), raw[:200]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "alice@a.example"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@a.example"
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 3834
    # RFC 3462 / RFC 6522: multipart/report; report-type=delivery-status.
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert "nobody@b.example" in parts[0].get_content()
    # RFC 3464 2.2 / 2.3: per-message fields, then one block per recipient.
    blocks = parts[1].get_payload()
    per_message, per_recipient = blocks[0], blocks[1:]
    assert per_message["Reporting-MTA"] == "dns; a.example"
    assert per_message["Arrival-Date"]
    assert len(per_recipient) == 1
    r = per_recipient[0]
    assert r["Final-Recipient"].lower() == "rfc822; nobody@b.example"
    assert r["Action"] == "failed"
    assert r["Status"].startswith("5."), r["Status"]
    assert r["Remote-MTA"].lower() == "dns; mx.b.example"
    diagnostic = r["Diagnostic-Code"]
    assert diagnostic.lower().startswith("smtp; 550"), diagnostic
    assert r["Last-Attempt-Date"]
    # RFC 3464 2.4 / 6522: the original message follows in full (RET defaults to FULL).
    [returned] = parts[2].get_payload()
    assert returned["Subject"] == "bounce me"
    assert original.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n") in raw  # LF on disk
    # Never a report about the report (RFC 3461 6.2): nothing else arrives, the spool empties.
    wait_until(lambda: a.spool_empty() or None, DELIVERY_TIMEOUT, "A's spool to empty")
    assert len(a.maildir("alice@a.example")) == 1


def test_251_alias_member_in_a_foreign_domain_is_relayed(pair):
    make_a, b = pair
    b.start()
    a = make_a()
    c = Line.connect(a.addresses[1])
    try:
        assert c.reply()[0] == 220
        c.cmd("EHLO outside.example", 250)
        c.cmd("MAIL FROM:<someone@outside.example>", 250)
        lines = c.cmd("RCPT TO:<fwd@a.example>", 251)  # RFC 5321 3.4: "will forward"
        assert "<bob@b.example>" in lines[-1]
        c.cmd("DATA", 354)
        c.say("Subject: forwarded\r\n\r\nvia the alias\r\n.")
        assert c.reply()[0] == 250
        c.cmd("QUIT", 221)
    finally:
        c.close()
    [path] = b.wait_mail("bob@b.example")
    raw = path.read_bytes()
    assert raw.startswith(b"Return-Path: <someone@outside.example>\n")
    assert len(received_lines(raw)) == 2


def test_etrn_starts_a_queue_run_for_the_domain(pair):
    make_a, b = pair
    # A long retry: only ETRN can make the second attempt happen within the test.
    a = make_a(retry_initial="1h", retry_max_backoff="2h",
               extra_smtp='relay_networks = ["127.0.0.1/32"]')  # ETRN needs trust or AUTH
    submit(a, ["bob@b.example"], "etrn me")
    wait_until(lambda: "delivery deferred" in a.log() or None, DELIVERY_TIMEOUT,
               "A to defer the message while B is down")
    b.start()
    c = Line.connect(a.addresses[1])
    try:
        assert c.reply()[0] == 220
        c.cmd("EHLO b-client.example", 250)
        lines = c.cmd("ETRN b.example", 250)  # RFC 1985 5.1
        assert "b.example" in lines[0]
        c.cmd("QUIT", 221)
    finally:
        c.close()
    [path] = b.wait_mail("bob@b.example")
    assert b"Subject: etrn me" in path.read_bytes()


def test_turn_is_refused_without_auth_and_to_users_without_domains(pair):
    make_a, _ = pair
    a = make_a()
    c = Line.connect(a.addresses[1])
    try:
        assert c.reply()[0] == 220
        c.cmd("EHLO client.example", 250)
        c.cmd("TURN", 503)
        token = base64.b64encode(f"\0alice@a.example\0{PASSWORD}".encode()).decode()
        c.cmd(f"AUTH PLAIN {token}", 235)
        c.cmd("TURN", 502)
        c.cmd("QUIT", 221)
    finally:
        c.close()


def test_turn_after_auth_delivers_the_owners_held_mail(pair):
    make_a, _ = pair
    a = make_a()
    submit(a, ["dave@client.example", "erin@client.example"], "held for turn")
    wait_until(lambda: "held for the domain's client" in a.log() or None, DELIVERY_TIMEOUT,
               "A to hold the mail for client.example")
    c = Line.connect(a.addresses[1])
    try:
        assert c.reply()[0] == 220
        c.cmd("EHLO client.example", 250)
        token = base64.b64encode(f"\0carol@a.example\0{PASSWORD}".encode()).decode()
        c.cmd(f"AUTH PLAIN {token}", 235)
        c.cmd("TURN", 250)
        # The roles are swapped (RFC 821 4.1.1): we are the receiver now and greet first.
        c.say("220 client.example ESMTP turned around")
        ehlo = c.line().decode()
        assert ehlo.split()[0].upper() in ("EHLO", "HELO") and "a.example" in ehlo, ehlo
        c.say("250 client.example")
        mail = c.line().decode()
        assert mail.upper().startswith("MAIL FROM:<ALICE@A.EXAMPLE>"), mail
        c.say("250 2.1.0 OK")
        rcpts = []
        for _ in range(2):
            line = c.line().decode()
            assert line.upper().startswith("RCPT TO:"), line
            rcpts.append(line[8:].strip().lower())
            c.say("250 2.1.5 OK")
        assert sorted(rcpts) == ["<dave@client.example>", "<erin@client.example>"]
        assert c.line().decode().upper() == "DATA"
        c.say("354 go ahead")
        data = c.data()
        c.say("250 2.0.0 taken")
        assert b"Subject: held for turn" in data
        assert c.line().decode().upper() == "QUIT"
        c.say("221 bye")
    finally:
        c.close()
    wait_until(lambda: a.spool_empty() or None, DELIVERY_TIMEOUT, "A's spool to empty")
    assert "TURN: queued mail delivered" in a.log()
