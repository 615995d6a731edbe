"""A private Postfix instance for the interop tests (a real peer nobody here wrote).

Its own config_directory, queue_directory and data_directory under the test's temp dir;
`postfix -c DIR start` / `stop`; it listens on 127.0.0.1:PORT and delivers the domain
pf.example into one Maildir with its `virtual` agent. Optionally it offers STARTTLS with a
self-signed certificate made by openssl (or a broken TLS setup rustls cannot speak).

Postfix runs daemons as its `postfix` user and wants to own its queue: this needs root (as
`scripts/test` runs in CI). Without root, or without Postfix installed, the tests that use it
are skipped with the reason (`pytestmark` below, re-exported).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from outbound_helpers import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

pytestmark = [
    pytest.mark.skipif(not Path(POSTFIX).exists(), reason="Postfix is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def merge(lines: list[str], extra: list[str]) -> list[str]:
    """`lines` with each `key = value` of `extra` in place of the same key's line, or added.

    Never a key twice: every Postfix process warns "overriding earlier entry" for each one,
    and that many warnings at once can fill postlogd's socket and stall smtpd's greeting.
    """
    out = list(lines)
    for line in extra:
        key = line.split("=", 1)[0].strip()
        at = [i for i, old in enumerate(out) if old.split("=", 1)[0].strip() == key]
        if at:
            out[at[0]] = line
        else:
            out.append(line)
    return out


class Postfix:
    def __init__(self, root: Path, tls: bool, broken_tls: bool = False,
                 extra: list[str] | None = None):
        self.root = root
        self.port = free_port("127.0.0.1")
        self.conf = root / "etc"
        self.vmail = root / "vmail"
        self.log = root / "postfix.log"
        for d in (self.conf, self.vmail):
            d.mkdir(parents=True)
        uid = pwd.getpwnam("postfix").pw_uid
        gid = grp.getgrnam("postfix").gr_gid
        os.chown(self.vmail, uid, gid)
        # The queue belongs to root (postfix makes its subdirectories at start); the data
        # directory to the postfix user.
        (root / "queue").mkdir()
        (root / "data").mkdir()
        os.chown(root / "data", uid, gid)
        # The temp dir path must be traversable by the postfix user.
        for parent in [root, *root.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {root / 'queue'}",
            f"data_directory = {root / 'data'}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "myhostname = pf-mx.test",
            "mydomain = pf-mx.test",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "virtual_mailbox_domains = pf.example",
            f"virtual_mailbox_base = {self.vmail}",
            "virtual_mailbox_maps = static:Maildir/",
            f"virtual_uid_maps = static:{uid}",
            f"virtual_gid_maps = static:{gid}",
            f"maillog_file = {self.log}",
            f"maillog_file_prefixes = {root}",
            "syslog_name = postfix-yizhan-test",
            "smtputf8_enable = no",
        ]
        if tls:
            key, cert = root / "key.pem", root / "cert.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=pf-mx.test", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True, timeout=60)
            lines += [
                "smtpd_tls_security_level = may",
                f"smtpd_tls_cert_file = {cert}",
                f"smtpd_tls_key_file = {key}",
                "smtpd_tls_received_header = yes",
            ]
            if broken_tls:
                # STARTTLS offered, but only TLS 1.2 with RSA key exchange and CBC ciphers,
                # none of which rustls speaks: every handshake from yizhan fails.
                lines += [
                    "smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3",
                    "smtpd_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3",
                    "smtpd_tls_ciphers = high",
                    "smtpd_tls_mandatory_ciphers = high",
                    "tls_high_cipherlist = AES256-SHA:AES128-SHA",
                ]
        else:
            lines.append("smtpd_tls_security_level = none")
        lines = merge(lines, extra or [])
        (self.conf / "main.cf").write_text("\n".join(lines) + "\n")
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> None:
        done = self.postfix("start")
        if done.returncode != 0:
            pytest.fail(f"postfix start failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")
        import socket
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"postfix did not listen on {self.port}:\n{self.logs()}")

    def stop(self) -> None:
        self.postfix("stop")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def delivered(self) -> list[Path]:
        new = self.vmail / "Maildir" / "new"
        return sorted(new.iterdir()) if new.is_dir() else []


@pytest.fixture
def postfix_factory(tmp_path):
    started = []

    def make(tls: bool, broken_tls: bool = False, extra: list[str] | None = None) -> Postfix:
        name = "postfix-broken-tls" if broken_tls else "postfix-tls" if tls else "postfix"
        pf = Postfix(tmp_path / name, tls, broken_tls, extra)
        started.append(pf)
        pf.start()
        return pf

    yield make
    for pf in started:
        pf.stop()


