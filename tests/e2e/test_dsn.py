"""DSN (issue #14, RFC 3461, RFC 3464) against the real binary: offered by default; an alias
with several members reports `expanded` to a sender who asked for success notices, and its
members do not each report success."""

import email
import email.policy

from conftest import wait_until


def test_an_alias_reports_expanded_and_its_members_do_not_report_success(server_factory):
    srv = server_factory()
    c = srv.raw()
    lines = c.expect("EHLO client.test.example", 250)
    assert "250-DSN" in lines, lines
    c.expect("MAIL FROM:<user2@test.example> RET=HDRS ENVID=team+2B1", 250)
    c.expect("RCPT TO:<list@test.example> NOTIFY=SUCCESS ORCPT=rfc822;list@test.example", 250)
    c.expect("DATA", 354)
    c.send(b"From: <user2@test.example>\r\nTo: <list@test.example>\r\nSubject: to the team\r\n"
           b"\r\nHello, team.\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    srv.wait_mail("user@test.example")
    files = srv.wait_mail("user2@test.example", 2)
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert len(srv.maildir("user@test.example")) == 1
    assert len(srv.maildir("user2@test.example")) == 2, "the list copy and one report, no more"
    reports = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
               for p in srv.maildir("user2@test.example")]
    [report] = [r for r in reports if r.get_content_type() == "multipart/report"]
    status = report.get_payload()[1]
    text = "\n".join(part.as_string() for part in status.get_payload())
    assert "Action: expanded" in text, text
    assert "Final-Recipient: rfc822; list@test.example" in text, text
    assert "Original-Recipient: rfc822;list@test.example" in text.replace("; ", ";"), text
    assert "Original-Envelope-Id: team+1" in text, text
    # RET=HDRS, and a success notice carries the headers only.
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
