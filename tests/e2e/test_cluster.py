"""Three yizhan nodes sharing one queue on PostgreSQL, behind HAProxy (PROXY protocol v2),
delivering local mail to Dovecot over LMTP and relaying the rest to a sink (a fourth,
ordinary yizhan). A mixed load goes through HAProxy; one node is killed with SIGKILL in the
middle, while mail it accepted waits for the sink (which only starts after the kill). Every
message that got its 250 must arrive: once in Dovecot, at least once and at most twice at
the sink (RFC 5321 6.1), and the shared queue must end empty. Bounded in count and time.

And a node killed in the middle of an attempt (its peer hangs after DATA), holding the claim:
the claim expires and the other node delivers the message, once.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, wait_until
from dovecot_helpers import DOVECOT, Dovecot
from outbound_helpers import free_port
from pg_helpers import postgres  # noqa: F401

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = [
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason="Dovecot is not installed"),
    pytest.mark.skipif(not Path(HAPROXY).exists(), reason="HAProxy is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="private Dovecot and PostgreSQL need root"),
]

MESSAGES = 60          # half local (Dovecot), half relayed (the sink)
KILL_AFTER = 30        # node 2 dies once this many messages were accepted
DEADLINE = 90          # seconds for everything to arrive after the sink starts

HAPROXY_CFG = """\
global
    maxconn 200
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend smtp
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


def node_config(name: str, backend: int, pg_url: str, dovecot: Dovecot, sink: int) -> str:
    return f"""
[[listener]]
address = "127.0.0.1:{backend}"
kind = "smtp"
proxy_protocol = true
proxy_networks = ["127.0.0.1/32"]

[store]
kind = "postgres"
url = "{pg_url}"
node = "{name}"
lease = "10s"
scan_interval = "1s"

[queue]
retry_initial = "1s"
retry_max_backoff = "2s"

[[domain]]
name = "store.example"
deliver = "lmtp"
lmtp = "unix:{dovecot.socket}"

[[mailbox]]
address = "alice@store.example"

[[smarthost]]
domain = "sink.example"
host = "127.0.0.1"
port = {sink}
tls = "none"
"""


def send_all(front: int, kill) -> list[tuple[str, str]]:
    """Sends the load through HAProxy; returns (recipient, subject) of every message that got
    its 250. A refused or broken attempt is tried again (bounded), as a client would."""
    accepted: list[tuple[str, str]] = []
    for n in range(MESSAGES):
        rcpt = "alice@store.example" if n % 2 == 0 else f"user{n}@sink.example"
        subject = f"cluster message {n:03d}"
        body = f"Subject: {subject}\r\nMessage-ID: <m{n}@client.example>\r\n\r\nhello\r\n"
        for _attempt in range(10):
            try:
                with smtplib.SMTP("127.0.0.1", front, timeout=IO_TIMEOUT) as s:
                    s.sendmail("sender@client.example", [rcpt], body.encode())
                accepted.append((rcpt, subject))
                break
            except (smtplib.SMTPException, OSError):
                time.sleep(0.2)
        if len(accepted) == KILL_AFTER:
            kill()
    return accepted


def subjects(paths: list[Path]) -> list[str]:
    out = []
    for p in paths:
        for line in p.read_bytes().split(b"\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].strip().decode())
                break
    return out


def test_three_nodes_lose_nothing_when_one_is_killed(server_factory, postgres, tmp_path):
    dovecot = Dovecot(tmp_path / "dovecot")
    haproxy = None
    try:
        sink_port = free_port("127.0.0.1")
        backends = [free_port("127.0.0.1") for _ in range(3)]
        smtp = {"relay_networks": ["127.0.0.0/8"]}
        nodes = [
            server_factory(name=f"node{i + 1}", smtp=smtp,
                           extra=node_config(f"node-{i + 1}", backends[i], postgres.url,
                                             dovecot, sink_port))
            for i in range(3)
        ]
        front = free_port("127.0.0.1")
        servers = "\n".join(f"    server node{i + 1} 127.0.0.1:{port} send-proxy-v2"
                            for i, port in enumerate(backends))
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(front=front, servers=servers))
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(front), 15, "HAProxy")

        accepted = send_all(front, nodes[1].kill)
        assert len(accepted) == MESSAGES, f"only {len(accepted)} accepted"
        assert not nodes[1].running()
        waiting = int(postgres.sql("SELECT count(*) FROM yizhan_messages"))
        assert waiting >= MESSAGES // 2 - 2, f"the relayed mail should wait for the sink: {waiting}"

        # The sink starts only now: what the dead node accepted for it waits in the queue.
        sink = server_factory(name="sink", extra=f"""
[[listener]]
address = "127.0.0.1:{sink_port}"
kind = "smtp"

[[domain]]
name = "sink.example"
""")
        local = sorted(s for r, s in accepted if r.endswith("@store.example"))
        relayed = sorted(s for r, s in accepted if r.endswith("@sink.example"))

        def arrived() -> bool:
            got = subjects(sink.all_delivered())
            return (len(dovecot.delivered("alice")) >= len(local)
                    and all(s in got for s in relayed))

        wait_until(arrived, DEADLINE, "every accepted message delivered\n" +
                   "\n".join(n.log()[-3000:] for n in nodes))
        wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0",
                   DEADLINE, "the shared queue to empty")
        # Once in Dovecot (its own log of each delivery, and the mailbox); at least once and
        # at most twice at the sink.
        ids = {s: f"<m{int(s.rsplit(' ', 1)[1])}@client.example>" for s in local}
        saved = dovecot.saved()
        for subject, msgid in ids.items():
            assert saved.count(msgid) == 1, (subject, saved.count(msgid))
        assert len(saved) == len(local), saved
        assert sorted(subjects(dovecot.delivered("alice"))) == local
        got = subjects(sink.all_delivered())
        for s in relayed:
            assert 1 <= got.count(s) <= 2, (s, got.count(s))
        # The dead node's share was finished by the others.
        survivors = nodes[0].log() + nodes[2].log()
        assert "claimed by another node" in survivors or "transaction done" in survivors
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        dovecot.stop()


def port_open(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class StallingSink:
    """An SMTP server that takes the first message's text and never answers it (a peer that
    hangs after DATA), then answers every later one with 250 and keeps it."""

    def __init__(self):
        import socket
        import threading
        self.port = free_port("127.0.0.1")
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.stalled = threading.Event()
        self.kept: list[bytes] = []
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            stall = self.connections == 1
            threading.Thread(target=self.session, args=(conn, stall), daemon=True).start()

    def session(self, conn, stall: bool):
        f = conn.makefile("rb")
        send = lambda line: conn.sendall(line + b"\r\n")  # noqa: E731
        try:
            send(b"220 sink.example ESMTP")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    send(b"250-sink.example\r\n250 8BITMIME")
                elif verb == b"DATA":
                    send(b"354 go ahead")
                    text = b""
                    while (chunk := f.readline()) not in (b".\r\n", b""):
                        text += chunk
                    if stall:
                        self.stalled.set()
                        f.read()  # until the sender goes away; never answered
                        return
                    self.kept.append(text)
                    send(b"250 2.0.0 kept")
                elif verb == b"QUIT":
                    send(b"221 bye")
                    return
                else:
                    send(b"250 ok")
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def test_a_node_killed_during_an_attempt_has_its_claim_finished_by_another(server_factory,
                                                                           postgres):
    sink = StallingSink()
    try:
        nodes = [
            server_factory(name=f"node{i + 1}", smtp={"relay_networks": ["127.0.0.0/8"]},
                           extra=f"""
[store]
kind = "postgres"
url = "{postgres.url}"
node = "node-{i + 1}"
lease = "10s"
scan_interval = "1s"

[[smarthost]]
domain = "sink.example"
host = "127.0.0.1"
port = {sink.port}
tls = "none"
""")
            for i in range(2)
        ]
        with smtplib.SMTP("127.0.0.1", nodes[0].port, timeout=IO_TIMEOUT) as s:
            s.sendmail("sender@client.example", ["someone@sink.example"],
                       b"Subject: once\r\n\r\nfinished by the other node\r\n")
        # Node 1 is in the middle of the attempt, holding the claim, when it dies.
        assert sink.stalled.wait(30), "node 1 never reached the sink"
        owner = postgres.sql("SELECT lease_owner FROM yizhan_messages")
        assert owner == "node-1", owner
        nodes[0].kill()
        # Its claim expires (10 s); node 2 finds the message at its next scan and delivers.
        wait_until(lambda: sink.kept, 45, "node 2 to deliver\n" + nodes[1].log()[-3000:])
        wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0", 30,
                   "the shared queue to empty")
        assert len(sink.kept) == 1 and b"finished by the other node" in sink.kept[0]
        assert "transaction done" in nodes[1].log()
    finally:
        sink.close()


def test_operators_work_on_the_shared_queue_from_any_node(server_factory, postgres):
    """A message node 1 accepted and could not deliver (its next hop is down) is listed,
    shown, held, released and flushed from node 2; once the next hop is up, the flush from
    node 2 delivers it once and the queue ends empty. A second one is deleted from node 2."""
    hop = free_port("127.0.0.1")
    nodes = [
        server_factory(name=f"node{i + 1}", smtp={"relay_networks": ["127.0.0.0/8"]},
                       extra=f"""
[store]
kind = "postgres"
url = "{postgres.url}"
node = "node-{i + 1}"
lease = "10s"
scan_interval = "1s"

[queue]
retry_initial = "1h"

[[smarthost]]
domain = "sink.example"
host = "127.0.0.1"
port = {hop}
tls = "none"
""")
        for i in range(2)
    ]

    def queue(node, *args):
        done = subprocess.run([str(node.binary), "queue", *args, "--config", str(node.config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    for subject in ("kept", "deleted"):
        with smtplib.SMTP("127.0.0.1", nodes[0].port, timeout=IO_TIMEOUT) as s:
            s.sendmail("sender@client.example", [f"{subject}@sink.example"],
                       f"Subject: {subject}\r\n\r\nfrom node 1\r\n".encode())
    wait_until(lambda: postgres.sql(
        "SELECT count(*) FROM yizhan_messages WHERE lease_owner IS NULL") == "2",
        30, "both attempts to end deferred\n" + nodes[0].log()[-3000:])

    import json
    listed = json.loads(queue(nodes[1], "list", "--json"))
    listed = listed["messages"] if isinstance(listed, dict) else listed
    ids = {m["recipients"][0]["address"].split("@")[0]: m["id"] for m in listed}
    assert sorted(ids) == ["deleted", "kept"], listed
    assert "Subject: kept" in queue(nodes[1], "show", ids["kept"])
    queue(nodes[1], "hold", ids["kept"])
    assert postgres.sql(f"SELECT held FROM yizhan_messages WHERE id = '{ids['kept']}'") == "t"
    queue(nodes[1], "delete", ids["deleted"])
    assert postgres.sql("SELECT count(*) FROM yizhan_messages") == "1"
    queue(nodes[1], "release", ids["kept"])
    assert postgres.sql(f"SELECT held FROM yizhan_messages WHERE id = '{ids['kept']}'") == "f"

    # The next hop comes up; the flush from node 2 delivers the message now, not in an hour.
    sink = server_factory(name="sink", extra=f"""
[[listener]]
address = "127.0.0.1:{hop}"
kind = "smtp"

[[domain]]
name = "sink.example"
""")
    queue(nodes[1], "flush", ids["kept"])
    wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0", 30,
               "the flushed message to be delivered\n" + nodes[1].log()[-3000:])
    got = subjects(sink.all_delivered())
    assert got == ["kept"], got
