"""LMTP delivery (RFC 2033) to a real Dovecot (Debian's dovecot-lmtpd, started here with a
throw-away configuration in the test's directory): a local domain with `deliver = "lmtp"` is
handed to Dovecot over its Unix socket or TCP; Dovecot's per-recipient answers are honoured
(a user Dovecot does not know is bounced to the sender, the other one delivered once, into
Dovecot's own mailbox).
"""

from __future__ import annotations

import os
import smtplib
from pathlib import Path

import pytest

from conftest import DELIVERY_TIMEOUT, IO_TIMEOUT, wait_until
from dovecot_helpers import DOVECOT, dovecot  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason="Dovecot is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Dovecot instance needs root"),
]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_domain_in_dovecot_is_delivered_over_lmtp(server_factory, dovecot, transport):
    endpoint = f"unix:{dovecot.socket}" if transport == "unix" else f"127.0.0.1:{dovecot.port}"
    srv = server_factory(extra=f"""
[[domain]]
name = "store.example"
deliver = "lmtp"
lmtp = "{endpoint}"

[[mailbox]]
address = "alice@store.example"

[[mailbox]]
address = "bob@store.example"
""")
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        refused = s.sendmail("user@test.example", ["alice@store.example", "bob@store.example"],
                             b"Subject: to the store\r\n\r\nkept by Dovecot\r\n")
    assert refused == {}
    # alice: into Dovecot's mailbox, once; nothing in yizhan's own Maildirs for her.
    wait_until(lambda: dovecot.delivered("alice"), DELIVERY_TIMEOUT,
               f"delivery to Dovecot\n{dovecot.log()}\n{srv.log()}")
    [mail] = dovecot.delivered("alice")
    assert b"kept by Dovecot" in mail.read_bytes()
    assert not srv.mailbox_dir("alice@store.example").exists()
    # bob: Dovecot does not know him (550 5.1.1 at its RCPT): a report to the sender.
    [report] = srv.wait_mail("user@test.example")
    text = report.read_bytes()
    assert b"bob@store.example" in text and b"5.1.1" in text, text
    wait_until(srv.spool_empty, DELIVERY_TIMEOUT, "an empty spool")
    assert "protocol=lmtp" in srv.log()
    assert len(dovecot.delivered("alice")) == 1
