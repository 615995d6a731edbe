"""An MX that points back to the sender (RFC 5321 5.1), between two real yizhan instances.

A (a.example, 127.0.0.2) relays for its authenticated user; B (mx.b.example, 127.0.0.3) is
the real peer. The test DNS server says:

- loop.example: MX 10 a.example, which is A's own host name;
- alias.example: MX 10 other-name.example, whose address and port are A's own listener;
- fallback.example: MX 5 mx.b.example, MX 10 a.example (B is better than A).

A must drop itself and every MX at or after its own preference: fallback.example goes to B;
the other two fail at once with "mail for D loops back to myself" (5.4.6) in one report to
the sender, instead of A sending the message to itself for ever (before, the address showed
up thousands of times in the log within seconds).
"""

from __future__ import annotations

import email
import email.policy
import smtplib

import pytest

from conftest import DELIVERY_TIMEOUT, wait_until
from outbound_helpers import LoopbackServer, TestDns, config, free_port, hash_password

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
PASSWORD = "correct horse"


@pytest.fixture
def servers(yizhan_bin, tmp_path):
    dns = TestDns({
        "loop.example": [("MX", (10, "a.example"))],
        "alias.example": [("MX", (10, "other-name.example"))],
        "fallback.example": [("MX", (5, "mx.b.example")), ("MX", (10, "a.example"))],
        "a.example": [("A", A_HOST)],
        "other-name.example": [("A", A_HOST)],
        "mx.b.example": [("A", B_HOST)],
    })
    port = free_port(B_HOST)
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = LoopbackServer(yizhan_bin, b_dir, config(
        "mx.b.example", b_dir / "data", [(f"{B_HOST}:{port}", "smtp")],
        '[[domain]]\nname = "fallback.example"\n\n[[mailbox]]\naddress = "bob@fallback.example"\n',
    )).start()
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    # A listens on the port it sends to (B's), on its own address: an MX host with A's address
    # and that port is A.
    a = LoopbackServer(yizhan_bin, a_dir, config(
        "a.example", a_dir / "data", [(f"{A_HOST}:{port}", "smtp"), (f"{A_HOST}:0", "submission")],
        f"""
[auth]
require_tls = false

[delivery]
remote_port = {port}
dns_servers = ["127.0.0.1:{dns.port}"]
dns_timeout = "2s"
connect_timeout = "2s"
tls = "none"

[[domain]]
name = "a.example"

[[mailbox]]
address = "alice@a.example"
password = "{hash_password(yizhan_bin, PASSWORD)}"
""",
    )).start()
    yield a, b
    for srv in (a, b):
        srv.kill()
    dns.stop()


def test_an_mx_pointing_back_to_us_fails_at_once_and_a_better_one_is_used(servers):
    a, b = servers
    body = (b"From: <alice@a.example>\r\nTo: <bob@fallback.example>\r\nSubject: loops\r\n"
            b"Message-ID: <loops@a.example>\r\n\r\nWhere does this go?\r\n")
    submission = a.addresses[1]
    with smtplib.SMTP(*submission, local_hostname="client.a.example", timeout=10) as s:
        s.login("alice@a.example", PASSWORD)
        refused = s.sendmail("alice@a.example",
                             ["bob@fallback.example", "nobody@loop.example", "x@alias.example"], body)
        assert refused == {}

    # The better MX (B) gets its copy.
    [delivered] = b.wait_mail("bob@fallback.example")
    assert b"Subject: loops" in delivered.read_bytes()

    # One report for the two that loop, then nothing left.
    [path] = a.wait_mail("alice@a.example")
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].get_payload()
    blocks = {r["Final-Recipient"].split(";")[1].strip(): r for r in status[1:]}
    assert set(blocks) == {"nobody@loop.example", "x@alias.example"}, list(blocks)
    for block in blocks.values():
        assert block["Action"] == "failed"
        assert block["Status"] == "5.4.6", block["Status"]
    text = report.get_payload()[0].get_content()
    assert "loops back to myself" in text, text
    wait_until(lambda: a.spool_empty() or None, DELIVERY_TIMEOUT, "A's spool to empty")
    # A never sent the message to itself: its smtp listener saw no connection from itself.
    log = a.log()
    assert log.count("queued queue_id=") == 2, log  # the message and the report, nothing else
