"""Two servers that forward to each other (RFC 5321 6.3): the hop limit ends the loop.

A (a.example, 127.0.0.2) sends mail for loop.example to its smarthost B; B (127.0.0.3) sends
everything to its smarthost A. A message for bob@loop.example goes back and forth, each server
adding its `Received:` field, until the copy with more than `max_hops` (100) fields is refused
at the end of data with 554 5.4.6. The sender then gets exactly one report, and the loop has
made a bounded number of copies (before, it went on for ever).
"""

from __future__ import annotations

import email
import email.policy
import smtplib

import pytest

from conftest import DELIVERY_TIMEOUT, wait_until
from outbound_helpers import LoopbackServer, config, free_port

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def servers(yizhan_bin, tmp_path):
    a_port, b_port = free_port(A_HOST), free_port(B_HOST)
    common = '\n[smtp]\nrelay_networks = ["127.0.0.0/8"]\n\n[delivery]\ntls = "none"\n'
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = LoopbackServer(yizhan_bin, b_dir, config(
        "b.example", b_dir / "data", [(f"{B_HOST}:{b_port}", "smtp")],
        common + f'\n[[smarthost]]\nhost = "{A_HOST}"\nport = {a_port}\ntls = "none"\n',
    )).start()
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    a = LoopbackServer(yizhan_bin, a_dir, config(
        "a.example", a_dir / "data", [(f"{A_HOST}:{a_port}", "smtp")],
        common + f"""
[[smarthost]]
domain = "loop.example"
host = "{B_HOST}"
port = {b_port}
tls = "none"

[[domain]]
name = "a.example"

[[mailbox]]
address = "alice@a.example"
""",
    )).start()
    yield a, b
    for srv in (a, b):
        srv.kill()


def test_a_forwarding_loop_ends_with_one_report(servers):
    a, b = servers
    body = (b"From: <alice@a.example>\r\nTo: <bob@loop.example>\r\nSubject: round and round\r\n"
            b"Message-ID: <loop@a.example>\r\n\r\nWhere does this go?\r\n")
    with smtplib.SMTP(*a.addresses[0], local_hostname="client.a.example", timeout=10) as s:
        assert s.sendmail("alice@a.example", ["bob@loop.example"], body) == {}

    [path] = a.wait_mail("alice@a.example")
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].get_payload()
    [block] = status[1:]
    assert block["Action"] == "failed"
    assert block["Status"] == "5.4.6", block["Status"]
    assert "Too many hops" in report.get_payload()[0].get_content()

    wait_until(lambda: (a.spool_empty() and b.spool_empty()) or None, DELIVERY_TIMEOUT,
               "both spools to empty")
    # 100 Received: fields at most: 50 copies accepted by each server (one of them the first
    # from alice), then the report; nothing more.
    copies = a.log().count("queued queue_id=") + b.log().count("queued queue_id=")
    assert 99 <= copies <= 102, copies
    assert "too many hops" in a.log() + b.log()
    # Still exactly one report a little later: the loop is over.
    assert len(a.maildir("alice@a.example")) == 1


def test_sendmail_with_too_many_hops_is_bounced_not_sent(server_factory, yizhan_bin):
    """The same limit for local submission: a message that already has 100 Received: fields
    (the pickup adds one more) is bounced to its sender with 5.4.6, never delivered."""
    import subprocess
    srv = server_factory()
    trace = b"".join(b"Received: from hop%d.test by hop%d.test; Sat, 5 Dec 2026 09:00:00 +0000\r\n"
                     % (i, i + 1) for i in range(100))
    out = subprocess.run(
        [str(yizhan_bin), "sendmail", "--config", str(srv.config), "-f", "user@test.example",
         "user2@test.example"],
        input=trace + b"Subject: looping\r\n\r\nround and round\r\n", capture_output=True,
        timeout=30)
    assert out.returncode == 0, out
    [path] = srv.wait_mail("user@test.example")
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    [block] = report.get_payload()[1].get_payload()[1:]
    assert block["Status"] == "5.4.6", block["Status"]
    wait_until(srv.spool_empty, DELIVERY_TIMEOUT, "an empty spool")
    assert srv.maildir("user2@test.example") == []
