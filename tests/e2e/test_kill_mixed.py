"""kill -9 at random moments of a mixed load (issue #12, "no silent loss, ever").

A (a.example) delivers alice and carol locally and relays b.example to B (mx.b.example, which
has bob; nobody@b.example is refused with 550, so A owes alice a report). Each round submits
one message with AUTH to A (random recipients among those four), sometimes runs a queue
command against A (`flush`, `hold`, or `hold` then `release`), then kills A with SIGKILL after a random
delay of up to 80 ms (often in the middle of a local batch, a relay transaction, a report or
the command) and starts it again. B stays up. At the end every held message is released and
every acknowledged message is counted:

- in each local mailbox exactly once (Maildir names are made of the queue id and recipient);
- at B at least once and at most twice (a duplicate only if the kill fell between B's 250 and
  A's record of it, which RFC 5321 6.1 accepts);
- as a report in alice's mailbox for each message to nobody@b.example, at least once and at
  most twice (the report is queued before the failure is recorded: twice after a crash in
  between, never zero times);
- and A's spool ends empty.

The seed comes from `YIZHAN_E2E_SEED` (else the clock) and is printed on failure. Every loop
is bounded in rounds and time.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import wait_until
from outbound_helpers import LoopbackServer, TestDns, config, free_port, hash_password

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
PASSWORD = "correct horse"
ROUNDS = 24
LOCAL = ("alice@a.example", "carol@a.example")
REMOTE_OK = "bob@b.example"
REMOTE_REFUSED = "nobody@b.example"
SUBJECT = re.compile(r"^Subject: mixed (\S+)\r?$", re.M)


@pytest.fixture
def setup(yizhan_bin, tmp_path):
    dns = TestDns({
        "b.example": [("MX", (10, "mx.b.example"))],
        "mx.b.example": [("A", B_HOST)],
    })
    password = hash_password(yizhan_bin, PASSWORD)
    b_port = free_port(B_HOST)
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = LoopbackServer(yizhan_bin, b_dir, config(
        "mx.b.example", b_dir / "data", [(f"{B_HOST}:{b_port}", "smtp")],
        '[[domain]]\nname = "b.example"\n\n[[mailbox]]\naddress = "bob@b.example"\n',
    )).start()
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    a = LoopbackServer(yizhan_bin, a_dir, config(
        "a.example", a_dir / "data", [(f"{A_HOST}:0", "submission")],
        f"""
[auth]
require_tls = false

[queue]
retry_initial = "1s"
retry_max_backoff = "1s"

[delivery]
remote_port = {b_port}
dns_servers = ["127.0.0.1:{dns.port}"]
dns_timeout = "2s"
connect_timeout = "2s"

[[domain]]
name = "a.example"

[[mailbox]]
address = "alice@a.example"
password = "{password}"

[[mailbox]]
address = "carol@a.example"
""",
    )).start()
    yield a, b
    for srv in (a, b):
        srv.kill()
    dns.stop()


def submit(a: LoopbackServer, tag: str, rcpts: list[str]) -> str | None:
    """Sends one message; its queue id once acknowledged, None if the server went away."""
    body = (f"From: <alice@a.example>\r\nTo: <{rcpts[0]}>\r\nSubject: mixed {tag}\r\n"
            f"Message-ID: <{tag}@a.example>\r\n\r\nround {tag}\r\n").encode()
    try:
        with smtplib.SMTP(*a.addresses[0], local_hostname="client.a.example", timeout=10) as s:
            s.login("alice@a.example", PASSWORD)
            code, _ = s.mail("alice@a.example")
            assert code == 250
            for r in rcpts:
                code, _ = s.rcpt(r)
                assert code == 250, (r, code)
            code, reply = s.data(body)
            assert code == 250, reply
            return reply.decode().rsplit(" ", 1)[-1]
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return None


def queue(a: LoopbackServer, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(a.binary), "queue", "--config", str(a.config), *args],
                          capture_output=True, timeout=30, check=check)


def mailbox(root: Path, address: str) -> list[email.message.Message]:
    local, domain = address.split("@")
    new = root / "data" / "mail" / domain / local / "new"
    if not new.is_dir():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.compat32)
            for p in sorted(new.iterdir())]


def tags_in(messages, reports: bool) -> dict[str, int]:
    """Count per tag of plain messages, or of reports (multipart/report) about a tag."""
    counts: dict[str, int] = {}
    for m in messages:
        is_report = m.get_content_type() == "multipart/report"
        if is_report != reports:
            continue
        m_ = SUBJECT.search(m.as_string())
        assert m_, m.as_string()[:500]
        counts[m_.group(1)] = counts.get(m_.group(1), 0) + 1
    return counts


def test_kill_9_during_a_mixed_load_loses_nothing(setup):
    a, b = setup
    seed = int(os.environ.get("YIZHAN_E2E_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    acked: dict[str, list[str]] = {}
    try:
        for i in range(ROUNDS):
            tag = f"m{i:03d}-{seed}"
            rcpts = rng.sample([*LOCAL, REMOTE_OK, REMOTE_REFUSED], rng.randint(1, 4))
            queue_id = submit(a, tag, rcpts)
            if queue_id is not None:
                acked[tag] = rcpts
            action = rng.choice(["none", "none", "flush", "hold-release", "hold"])
            if action == "flush":
                queue(a, "flush")
            elif action.startswith("hold") and queue_id:
                queue(a, "hold", queue_id)
                if action == "hold-release":
                    queue(a, "release", queue_id)
            time.sleep(rng.random() * 0.08)
            a.kill()
            a.start()

        # Whatever a kill left held is released (by the operator, as it were).
        listed = json.loads(queue(a, "list", "--json", check=True).stdout)
        held = [m["id"] for m in listed if m["held"]]
        for queue_id in held:
            queue(a, "release", queue_id, check=True)

        def settled():
            local = {addr: tags_in(mailbox(a.workdir, addr), reports=False) for addr in LOCAL}
            remote = tags_in(mailbox(b.workdir, REMOTE_OK), reports=False)
            reports = tags_in(mailbox(a.workdir, "alice@a.example"), reports=True)
            want_local = all(local[r].get(t, 0) >= 1 for t, rs in acked.items() for r in rs if r in LOCAL)
            want_remote = all(remote.get(t, 0) >= 1 for t, rs in acked.items() if REMOTE_OK in rs)
            want_reports = all(reports.get(t, 0) >= 1 for t, rs in acked.items() if REMOTE_REFUSED in rs)
            done = want_local and want_remote and want_reports and a.spool_empty()
            return (local, remote, reports) if done else None

        local, remote, reports = wait_until(settled, 60, "every acknowledged message accounted for")
        for tag, rcpts in acked.items():
            for r in LOCAL:
                want = 1 if r in rcpts else 0
                assert local[r].get(tag, 0) == want, f"{tag} in {r}: {local[r].get(tag, 0)}, want {want}"
            assert remote.get(tag, 0) <= 2, f"{tag} at B {remote.get(tag)} times"
            if REMOTE_OK not in rcpts:
                assert tag not in remote, f"{tag} at B, not a recipient"
            assert reports.get(tag, 0) <= 2, f"{reports.get(tag)} reports about {tag}"
            if REMOTE_REFUSED not in rcpts:
                assert tag not in reports, f"a report about {tag}, which had no refused recipient"
        print(f"seed {seed}: {len(acked)} acknowledged of {ROUNDS}, held at the end {len(held)}, "
              f"B duplicates {sum(1 for v in remote.values() if v > 1)}, "
              f"double reports {sum(1 for v in reports.values() if v > 1)}")
    except BaseException as e:
        raise AssertionError(f"failed with YIZHAN_E2E_SEED={seed}: {e}") from e
