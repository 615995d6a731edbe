"""LMTP delivery (RFC 2033) to a real Dovecot (Debian's dovecot-lmtpd, started here with a
throw-away configuration in the test's directory): a local domain with `deliver = "lmtp"` is
handed to Dovecot over its Unix socket or TCP; Dovecot's per-recipient answers are honoured
(a user Dovecot does not know is bounced to the sender, the other one delivered once, into
Dovecot's own mailbox).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DELIVERY_TIMEOUT, IO_TIMEOUT, wait_until
from outbound_helpers import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

pytestmark = [
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason="Dovecot is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Dovecot instance needs root"),
]

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
mail_location = maildir:{root}/mail/%d/%n
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class Dovecot:
    """A private Dovecot with LMTP on {root}/run/lmtp and 127.0.0.1:port; only
    alice@store.example exists in it."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port("127.0.0.1")
        for d in ("run", "state", "mail", "home"):
            (root / d).mkdir(parents=True)
        for d in ("mail", "home"):
            shutil.chown(root / d, "nobody", "nogroup")
        # Dovecot's own users must reach the directories.
        for parent in [root, *root.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        (root / "users").write_text(f"alice@store.example::65534:65534::{root}/home/alice::\n")
        self.conf = root / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(root=root, port=self.port))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        socket_path = root / "run" / "lmtp"
        wait_until(lambda: socket_path.exists() or self.proc.poll() is not None, 15,
                   "Dovecot's LMTP socket")
        if self.proc.poll() is not None:
            pytest.fail(f"dovecot exited: {self.proc.stderr.read()}\n{self.log()}")

    @property
    def socket(self) -> Path:
        return self.root / "run" / "lmtp"

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def delivered(self, user: str) -> list[Path]:
        new = self.root / "mail" / "store.example" / user / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def stop(self) -> None:
        subprocess.run([DOVECOT, "-c", str(self.conf), "stop"], capture_output=True, timeout=30)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def dovecot(tmp_path):
    dc = Dovecot(tmp_path / "dovecot")
    yield dc
    dc.stop()


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
    time.sleep(0.2)
    assert len(dovecot.delivered("alice")) == 1
