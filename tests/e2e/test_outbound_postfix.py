"""Interop with a real peer nobody here wrote: Postfix receives what yizhan's client sends.

A private Postfix instance (its own config_directory, queue_directory and data_directory under
the test's temp dir; `postfix -c DIR start` / `stop`) listens on 127.0.0.1:PORT and delivers
the domain pf.example into one Maildir with its `virtual` agent. yizhan routes pf.example to it
with a `[[smarthost]]`, once with `tls = "none"` and once with `tls = "require"` (Postfix then
offers STARTTLS with a self-signed certificate made by openssl, and records the TLS version in
its Received: line).

The Postfix instance is `postfix_helpers.Postfix`: it needs root (as `scripts/test` runs in
CI); without root, or without Postfix installed, the tests are skipped with the reason.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess

import pytest

from conftest import DELIVERY_TIMEOUT, HOSTNAME, wait_until
from postfix_helpers import POSTFIX, Postfix, pytestmark, postfix_factory  # noqa: F401


def relay_to(server_factory, pf: Postfix, policy: str):
    """A yizhan that relays for 127.0.0.0/8 and sends pf.example to `pf` with TLS `policy`."""
    return server_factory(
        smtp={"relay_networks": ["127.0.0.0/8"]},
        extra=f"""
[[smarthost]]
domain = "pf.example"
host = "127.0.0.1"
port = {pf.port}
tls = "{policy}"
""",
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_postfix_receives_from_yizhan(server_factory, postfix_factory, tls):
    pf = postfix_factory(tls)
    policy = "require" if tls else "none"
    srv = relay_to(server_factory, pf, policy)
    body = (b"From: <user@test.example>\r\nTo: <someone@pf.example>\r\n"
            b"Subject: to postfix\r\n\r\n.leading dot\r\nHello, Postfix.\r\n")
    with srv.smtp() as s:
        assert s.sendmail("user@test.example", ["someone@pf.example"], body) == {}
    try:
        [path] = wait_until(lambda: pf.delivered() or None, DELIVERY_TIMEOUT,
                            "Postfix to deliver into its Maildir")
    except BaseException:
        print(pf.logs())
        raise
    raw = path.read_bytes().replace(b"\n", b"\r\n")
    assert b"Return-Path: <user@test.example>" in raw
    assert b"Subject: to postfix" in raw
    assert raw.endswith(b"\r\n\r\n.leading dot\r\nHello, Postfix.\r\n")  # dot-stuffing undone
    received = [l for l in raw.split(b"\r\n") if l.startswith(b"Received:")]
    assert len(received) == 2, raw[:800]
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert (b"using TLS" in head) == tls, head
    wait_until(lambda: srv.spool_empty() or None, DELIVERY_TIMEOUT, "yizhan's spool to empty")


@pytest.mark.parametrize("policy", ["opportunistic", "require"])
def test_a_peer_whose_tls_fails(server_factory, postfix_factory, policy):
    """Issue #12: a peer whose STARTTLS handshake fails was never reached. Opportunistic TLS
    (RFC 7435, Postfix's `may`) tries again in clear text at once; `require` defers."""
    pf = postfix_factory(True, broken_tls=True)
    probe = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{pf.port}",
         "-brief", "-cipher", "AES128-SHA", "-tls1_2"],
        input=b"QUIT\n", capture_output=True, timeout=30)
    assert b"AES128-SHA" in probe.stdout + probe.stderr, "the peer speaks TLS, with CBC only"
    srv = relay_to(server_factory, pf, policy)
    body = (b"From: <user@test.example>\r\nTo: <someone@pf.example>\r\n"
            b"Subject: broken tls\r\n\r\nHello.\r\n")
    with srv.smtp() as s:
        assert s.sendmail("user@test.example", ["someone@pf.example"], body) == {}
    if policy == "opportunistic":
        [path] = wait_until(lambda: pf.delivered() or None, DELIVERY_TIMEOUT,
                            "Postfix to deliver into its Maildir")
        raw = path.read_bytes()
        assert b"Subject: broken tls" in raw
        assert b"using TLS" not in raw, "delivered in clear text"
        assert "TLS failed; delivering without TLS" in srv.log()
        wait_until(lambda: srv.spool_empty() or None, DELIVERY_TIMEOUT, "yizhan's spool to empty")
    else:
        wait_until(lambda: "delivery deferred" in srv.log() or None, DELIVERY_TIMEOUT,
                   "the delivery to be deferred")
        assert "TLS handshake failed" in srv.log()
        assert not pf.delivered(), "never in clear text with tls = require"
        assert not srv.spool_empty(), "still queued"


def test_a_utf8_recipient_a_peer_cannot_take_gets_an_rfc6533_report(server_factory, postfix_factory):
    """Issue #12, RFC 6531 3.5 and RFC 6533: this Postfix has `smtputf8_enable = no`, so a
    message for a UTF-8 address cannot go to it (yizhan never downgrades an address). The
    sender gets a global report: `utf-8;` address type, message/global-delivery-status."""
    pf = postfix_factory(False)
    srv = relay_to(server_factory, pf, "none")
    rcpt = "δοκιμή@pf.example"
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect("MAIL FROM:<user@test.example> SMTPUTF8", 250)
    c.send(f"RCPT TO:<{rcpt}>\r\n".encode())
    assert c.reply()[0] == 250
    c.expect("DATA", 354)
    c.send("From: <user@test.example>\r\nTo: <δοκιμή@pf.example>\r\nSubject: Γειά\r\n\r\nhello\r\n.\r\n".encode())
    assert c.reply()[0] == 250
    c.close()
    [path] = srv.wait_mail("user@test.example")
    raw = path.read_bytes()
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "global-delivery-status"
    # The sender is ASCII: the report's own header is too.
    assert report["To"].addresses[0].addr_spec == "user@test.example"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/global-delivery-status", "message/global"], raw.decode(errors="replace")
    assert rcpt in parts[0].get_content()
    # RFC 6533 6.1: the status part is 8-bit UTF-8; its groups of fields, one by one.
    assert parts[1]["Content-Transfer-Encoding"] == "8bit"
    status = parts[1].get_content().decode("utf-8")
    groups = [email.message_from_string(g, policy=email.policy.default)
              for g in re.split(r"\r?\n\r?\n", status.strip())]
    assert groups[0]["Reporting-MTA"] == f"dns; {HOSTNAME}", status
    [fields] = groups[1:]
    assert fields["Final-Recipient"] == f"utf-8; {rcpt}", status
    assert fields["Action"] == "failed", status
    # RFC 6531 3.7.4.1: the peer does not offer SMTPUTF8; never downgraded, a permanent failure.
    assert fields["Status"] == "5.6.7", status
    # RFC 6533 6.3: the original, whose header section is UTF-8, comes back as message/global.
    [original] = parts[2].get_payload()
    assert original["Subject"] == "Γειά"
    assert not pf.delivered()
    wait_until(lambda: srv.spool_empty() or None, DELIVERY_TIMEOUT, "yizhan's spool to empty")


def test_dsn_parameters_reach_postfix_and_its_report_comes_back(server_factory, postfix_factory,
                                                               yizhan_bin):
    """Issue #14, RFC 3461 5.2: yizhan offers DSN, takes RET, ENVID, NOTIFY and ORCPT, and passes
    them unchanged to a next hop that offers DSN (this Postfix); it sends no "relayed" report
    of its own. Postfix delivers and returns a success report to the sender (routed back to
    yizhan), which yizhan delivers: it names the envelope id and the original recipient."""
    srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]}, start=False)
    srv.start()
    pf = postfix_factory(False, extra=[
        f"transport_maps = inline:{{ test.example=smtp:[127.0.0.1]:{srv.port} }}",
        "smtp_tls_security_level = none",
    ])
    srv.config.write_text(srv.config.read_text() + f"""
[[smarthost]]
domain = "pf.example"
host = "127.0.0.1"
port = {pf.port}
tls = "none"
""")
    # Postfix must know yizhan's port, yizhan Postfix's: the smarthost comes by reload.
    done = subprocess.run([str(yizhan_bin), "reload", "--config", str(srv.config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    c = srv.raw()
    lines = c.expect("EHLO client.test.example", 250)
    assert any("DSN" in l for l in lines), lines
    c.expect("MAIL FROM:<user@test.example> RET=HDRS ENVID=order+2D42", 250)
    c.expect("RCPT TO:<someone@pf.example> NOTIFY=SUCCESS,FAILURE "
             "ORCPT=rfc822;someone@pf.example", 250)
    c.expect("DATA", 354)
    c.send(b"From: <user@test.example>\r\nTo: <someone@pf.example>\r\nSubject: dsn please\r\n"
           b"\r\nHello.\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    try:
        wait_until(lambda: pf.delivered() or None, DELIVERY_TIMEOUT, "Postfix to deliver")
        [path] = srv.wait_mail("user@test.example")
    except BaseException:
        print(pf.logs())
        raise
    raw = path.read_bytes()
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report", raw.decode(errors="replace")
    parts = list(report.iter_parts())
    status = parts[1].get_payload()[0].as_string() + "\n" + "\n".join(
        p.as_string() for p in parts[1].get_payload()[1:])
    assert "Original-Envelope-Id: order-42" in status, status
    assert "Reporting-MTA: dns; pf-mx.test" in status, status
    assert re.search(r"Original-Recipient: rfc822; ?someone@pf.example", status), status
    assert "Action: delivered" in status, status
    # Postfix's report, not one of ours: yizhan saw the peer offer DSN and sent it on.
    assert "pf-mx.test" in str(report["From"]), report["From"]
    assert len(srv.maildir("user@test.example")) == 1
