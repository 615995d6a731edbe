"""A private Dovecot with LMTP for the tests (Debian's dovecot-lmtpd, started with a
throw-away configuration in the test's directory; needs root). Only the users given exist in
it; its mailboxes are Maildirs under `root/mail/DOMAIN/USER`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import wait_until
from outbound_helpers import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

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


QUOTA_CONF = """\
mail_plugins = $mail_plugins quota
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
quota_full_tempfail = {tempfail}
"""


class Dovecot:
    """A private Dovecot with LMTP on {root}/run/lmtp and 127.0.0.1:port; only `users`
    exist in it. `quotas` gives users a quota rule (`*:storage=1B`: full at once); over it,
    a delivery fails after DATA with 452 4.2.2 (`quota_tempfail`) or 552 5.2.2."""

    def __init__(self, root: Path, users: tuple[str, ...] = ("alice@store.example",),
                 quotas: dict[str, str] | None = None, quota_tempfail: bool = True):
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
        self.users = users
        self.set_quotas(quotas or {})
        self.conf = root / "dovecot.conf"
        conf = DOVECOT_CONF.format(root=root, port=self.port)
        if quotas:
            conf += QUOTA_CONF.format(tempfail="yes" if quota_tempfail else "no")
        self.conf.write_text(conf)
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        socket_path = root / "run" / "lmtp"
        wait_until(lambda: socket_path.exists() or self.proc.poll() is not None, 15,
                   "Dovecot's LMTP socket")
        if self.proc.poll() is not None:
            pytest.fail(f"dovecot exited: {self.proc.stderr.read()}\n{self.log()}")

    def set_quotas(self, quotas: dict[str, str]) -> None:
        """Writes the users file with these quota rules (Dovecot reads it again when it
        changes)."""
        lines = []
        for u in self.users:
            extra = f"userdb_quota_rule={quotas[u]}" if u in quotas else ""
            lines.append(f"{u}::65534:65534::{self.root}/home/{u}::{extra}\n")
        path = self.root / "users"
        path.write_text("".join(lines))
        # A new mtime even within the same second, so that Dovecot sees the change.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    @property
    def socket(self) -> Path:
        return self.root / "run" / "lmtp"

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def delivered(self, user: str, domain: str = "store.example") -> list[Path]:
        """The messages in the mailbox's new/, each once. Dovecot renames files there while
        it updates its index (adding `,W=` sizes), and a directory listing taken meanwhile
        may show one file under both names: one path per Maildir unique name (the part
        before the first `,` or `:`)."""
        new = self.root / "mail" / domain / user / "new"
        if not new.is_dir():
            return []
        unique: dict[str, Path] = {}
        for path in sorted(new.iterdir()):
            unique.setdefault(path.name.split(",")[0].split(":")[0], path)
        return sorted(unique.values())

    def saved(self) -> list[str]:
        """The Message-IDs Dovecot logged as saved, one entry per delivery (the ground truth
        for "exactly once")."""
        out = []
        for line in self.log().splitlines():
            if "saved mail to" in line and "msgid=" in line:
                out.append(line.split("msgid=", 1)[1].split(":", 1)[0])
        return out

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


