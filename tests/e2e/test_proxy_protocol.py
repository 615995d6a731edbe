"""PROXY protocol behind a real HAProxy (Debian's package, started here with a throw-away
configuration): the session, its trace line, its relay decision and its connection limits
use the client HAProxy names (127.0.0.2 or 127.0.0.3 here), not HAProxy's own 127.0.0.1, with
`send-proxy` (version 1) and `send-proxy-v2`. A connection from outside `proxy_networks`, or
one without a header, is closed before the greeting.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT
from outbound_helpers import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="HAProxy is not installed")

HAPROXY_CFG = """\
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_v1
    bind 127.0.0.1:{v1}
    default_backend yizhan_v1
backend yizhan_v1
    server yizhan 127.0.0.1:{backend} send-proxy
frontend smtp_v2
    bind 127.0.0.1:{v2}
    default_backend yizhan_v2
backend yizhan_v2
    server yizhan 127.0.0.1:{backend} send-proxy-v2
"""


def wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def behind_haproxy(server_factory, tmp_path):
    """A yizhan with a PROXY listener (proxy_networks 127.0.0.1, one connection per client)
    behind HAProxy; yields (server, proxy listener port, {"v1": port, "v2": port})."""
    backend = free_port("127.0.0.1")
    srv = server_factory(
        # Loopback is exempt from connection limits by default; not here.
        smtp={"relay_networks": ["127.0.0.2/32"], "limit_exceptions": []},
        extra=f"""
[[listener]]
address = "127.0.0.1:{backend}"
kind = "smtp"
proxy_protocol = true
proxy_networks = ["127.0.0.1/32"]
max_connections_per_ip = 1
""",
    )
    ports = {"v1": free_port("127.0.0.1"), "v2": free_port("127.0.0.1")}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(backend=backend, **ports))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for port in ports.values():
            wait_listening(port, proc, "haproxy")
        yield srv, backend, ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def closed_without_a_word(s: socket.socket) -> bool:
    """The server closed: end of stream, or a reset (it closed with our bytes unread)."""
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def client(port: int, source: str) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT, source_address=(source, 0))
    s.ehlo("client.example")
    return s


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_real_client_is_in_the_trace_line_and_the_relay_decision(behind_haproxy, version):
    srv, _, ports = behind_haproxy
    with client(ports[version], "127.0.0.2") as s:
        s.sendmail("someone@client.example", ["user@test.example"],
                   f"Subject: through haproxy {version}\r\n\r\nhello\r\n")
        # 127.0.0.2 may relay (relay_networks); HAProxy's own 127.0.0.1 may not.
        s.mail("someone@client.example")
        code, _ = s.rcpt("friend@elsewhere.example")
        assert code == 250
        s.rset()
    with client(ports[version], "127.0.0.3") as s:
        s.mail("someone@client.example")
        code, text = s.rcpt("friend@elsewhere.example")
        assert code == 550 and b"5.7.1" in text, (code, text)
    [mail] = srv.wait_mail("user@test.example")
    received = mail.read_bytes().split(b"\r\n\r\n", 1)[0].decode()
    first = received.split("Received:", 1)[1].split("\n\t")[0:2]
    assert "[127.0.0.2]" in " ".join(first), received


def test_connection_limits_count_the_real_client(behind_haproxy):
    _, _, ports = behind_haproxy
    first = client(ports["v2"], "127.0.0.2")
    try:
        # One connection per client on this listener: a second one from 127.0.0.2 is
        # refused, while 127.0.0.3 (the same HAProxy, the same 127.0.0.1 to yizhan) is not.
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", ports["v2"], timeout=IO_TIMEOUT,
                         source_address=("127.0.0.2", 0))
        assert refused.value.smtp_code == 421
        with client(ports["v2"], "127.0.0.3") as other:
            assert other.noop()[0] == 250
    finally:
        first.close()


def test_no_header_or_not_from_the_balancer_is_closed(behind_haproxy):
    srv, backend, _ = behind_haproxy
    # From 127.0.0.2, not in proxy_networks: closed before a byte.
    with socket.create_connection(("127.0.0.1", backend), timeout=IO_TIMEOUT,
                                  source_address=("127.0.0.2", 0)) as s:
        assert closed_without_a_word(s)
    # From 127.0.0.1 (a balancer's address) but SMTP instead of a header: closed.
    with socket.create_connection(("127.0.0.1", backend), timeout=IO_TIMEOUT) as s:
        s.sendall(b"EHLO client.example\r\n")
        assert closed_without_a_word(s)
    log = srv.log()
    assert "only from proxy_networks" in log
    assert "PROXY protocol header refused" in log
