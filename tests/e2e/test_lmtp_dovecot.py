"""LMTP delivery (RFC 2033) to a real Dovecot (Debian's dovecot-lmtpd, started here with a
throw-away configuration in the test's directory): a local domain with `deliver = "lmtp"` is
handed to Dovecot over its Unix socket or TCP; Dovecot's per-recipient answers are honoured
(a user Dovecot does not know is bounced to the sender, the other one delivered once, into
Dovecot's own mailbox). And the answers after DATA, one per recipient (RFC 2033 4.2), from
a Dovecot whose user is over quota: one recipient delivered, one deferred (452 4.2.2) and
delivered once, after the quota is raised, by a flush, never twice to the first; or refused
(552 5.2.2) and reported to the sender. Messages one after another share one kept
connection.
"""

from __future__ import annotations

import os
import smtplib
from pathlib import Path

import pytest

import subprocess
import time

from conftest import DELIVERY_TIMEOUT, IO_TIMEOUT, wait_until
from dovecot_helpers import DOVECOT, Dovecot, dovecot  # noqa: F401

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


STORE = """
[[domain]]
name = "store.example"
deliver = "lmtp"
lmtp = "unix:{socket}"

[[mailbox]]
address = "alice@store.example"

[[mailbox]]
address = "carol@store.example"

[[mailbox]]
address = "bob@store.example"
"""


@pytest.mark.parametrize("tempfail", [True, False], ids=["deferred", "refused"])
def test_each_recipient_has_its_own_answer_after_data(server_factory, tmp_path, tempfail):
    users = ("alice@store.example", "carol@store.example")
    dc = Dovecot(tmp_path / "dovecot", users=users,
                 quotas={"carol@store.example": "*:storage=1B"}, quota_tempfail=tempfail)
    try:
        srv = server_factory(extra=STORE.format(socket=dc.socket))
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            refused = s.sendmail(
                "user@test.example",
                ["alice@store.example", "carol@store.example", "bob@store.example"],
                b"Subject: three fates\r\nMessage-ID: <fates@client.example>\r\n\r\nhi\r\n")
        assert refused == {}
        wait_until(lambda: dc.delivered("alice"), DELIVERY_TIMEOUT,
                   f"alice's delivery\n{dc.log()}\n{srv.log()}")
        # bob: refused at RCPT; carol: refused after DATA when the quota is final. One report.
        [report] = srv.wait_mail("user@test.example")
        text = report.read_bytes()
        assert b"bob@store.example" in text and b"5.1.1" in text, text
        if not tempfail:
            assert b"carol@store.example" in text and b"5.2.2" in text, text
            wait_until(srv.spool_empty, DELIVERY_TIMEOUT, "an empty spool")
            assert dc.saved() == ["<fates@client.example>"]
            return
        # carol: deferred, the message waits for her alone.
        assert b"carol@store.example" not in text, text
        wait_until(lambda: "4.2.2" in srv.log(), DELIVERY_TIMEOUT, "carol's deferral")
        assert not srv.spool_empty()
        dc.set_quotas({})
        # Dovecot reads its users file again within a second or two of a change: flushed
        # until it has (bounded), each flush one more attempt for carol.
        for _ in range(8):
            flush = subprocess.run(
                [str(srv.binary), "queue", "flush", "--config", str(srv.config)],
                capture_output=True, text=True, timeout=60)
            assert flush.returncode == 0, flush.stdout + flush.stderr
            deadline = time.monotonic() + 1.5
            while not dc.delivered("carol") and time.monotonic() < deadline:
                time.sleep(0.05)
            if dc.delivered("carol"):
                break
        assert dc.delivered("carol"), f"carol's delivery after the flush\n{dc.log()}\n{srv.log()}"
        wait_until(srv.spool_empty, DELIVERY_TIMEOUT, "an empty spool")
        # Once each: alice was not sent the message again with carol's retry.
        assert dc.saved() == ["<fates@client.example>"] * 2, dc.saved()
        assert len(dc.delivered("alice")) == 1 and len(dc.delivered("carol")) == 1
        assert len(srv.all_delivered()) == 1, "one report, for bob"
    finally:
        dc.stop()


def test_the_lmtp_connection_is_kept_for_the_next_message(server_factory, dovecot):
    """Messages one after another go over one LMTP connection (kept while idle, as SMTP ones
    are), each delivered once: Dovecot logs one connection for all of them."""
    srv = server_factory(extra=f"""
[delivery]
connection_idle = "60s"

[[domain]]
name = "store.example"
deliver = "lmtp"
lmtp = "unix:{dovecot.socket}"

[[mailbox]]
address = "alice@store.example"
""")
    for n in range(4):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail("user@test.example", ["alice@store.example"],
                       f"Subject: kept {n}\r\nMessage-ID: <kept{n}@client.example>\r\n\r\nhi\r\n"
                       .encode())
        wait_until(lambda: len(dovecot.delivered("alice")) == n + 1, DELIVERY_TIMEOUT,
                   f"message {n} in Dovecot\n{dovecot.log()}\n{srv.log()}")
    assert dovecot.saved() == [f"<kept{n}@client.example>" for n in range(4)]
    connections = [line for line in dovecot.log().splitlines() if "Connect from" in line]
    assert len(connections) == 1, dovecot.log()
