"""Helpers for the outbound tests: a tiny authoritative DNS server (dnslib) and yizhan instances
on other loopback addresses (all of 127/8 is local on Linux).

Every wait is bounded; every process and thread started here is stopped by its fixture.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord  # noqa: F401

from conftest import IO_TIMEOUT, POLL_STEP, START_TIMEOUT, Server, toml_value

READY_ANY_RE = re.compile(r"ready listen=(\S+(?: \d+\.\d+\.\d+\.\d+:\d+)*)")


class TestDns:
    """An authoritative-only DNS server over UDP on 127.0.0.1 for the names in `zone`.

    `zone` maps a lower-case name to a list of (type, value): ("MX", (pref, exchange)),
    ("A", "127.0.0.3"), ("TXT", "v=DKIM1; ..."), or ("RCODE", "SERVFAIL"). Unknown names are NXDOMAIN; a known name
    without records of the asked type is NODATA.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, zone: dict[str, list[tuple[str, object]]]):
        self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.queries: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.header.ra = 0
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        self.queries.append(f"{qname} {qtype}")
        records = self.zone.get(qname)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        for kind, value in records:
            if kind == "RCODE":
                reply.header.rcode = getattr(RCODE, str(value))
                return reply.pack()
            if kind != qtype:
                continue
            if kind == "MX":
                pref, exchange = value
                reply.add_answer(RR(qname, QTYPE.MX, ttl=60, rdata=MX(exchange, pref)))
            elif kind == "A":
                reply.add_answer(RR(qname, QTYPE.A, ttl=60, rdata=A(value)))
            elif kind == "TXT":
                # One record of character-strings of at most 255 bytes each.
                text = value.encode() if isinstance(value, str) else value
                parts = [text[i:i + 250] for i in range(0, len(text), 250)]
                reply.add_answer(RR(qname, QTYPE.TXT, ttl=60, rdata=TXT(parts)))
        return reply.pack()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(data), peer)
            except Exception:  # noqa: BLE001 - a bad query must not kill the server
                continue

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()


def free_port(host: str) -> int:
    """A port free on `host` right now (for a server that must keep its port across restarts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def hash_password(binary: Path, password: str) -> str:
    out = subprocess.run([str(binary), "hash-password"], input=password.encode(),
                         capture_output=True, timeout=30, check=True)
    return out.stdout.decode().strip()


class LoopbackServer(Server):
    """A yizhan instance whose config is written whole by the test (any loopback address)."""

    def start(self) -> "LoopbackServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = self.workdir / f"server.{self.starts}.log"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
                env={"PATH": "/usr/bin:/bin", "RUST_LOG": "info", "NO_COLOR": "1"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            m = READY_ANY_RE.search(self.log())
            if m:
                self.addresses = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))
                                  for a in m.group(1).split()]
                self.port = self.addresses[0][1]
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"yizhan exited with {self.proc.returncode} before ready:\n{self.log()}")
            time.sleep(POLL_STEP)
        self.kill()
        pytest.fail(f"yizhan not ready within {START_TIMEOUT}s:\n{self.log()}")


def config(hostname: str, data_dir: Path, listeners: list[tuple[str, str]], body: str) -> str:
    lines = [f"hostname = {toml_value(hostname)}", f"data_dir = {toml_value(str(data_dir))}", ""]
    for address, kind in listeners:
        lines += ["[[listener]]", f"address = {toml_value(address)}", f"kind = {toml_value(kind)}", ""]
    return "\n".join(lines) + body


class Line:
    """A line-level SMTP peer over a socket (client or, after TURN, server)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(IO_TIMEOUT)
        self.buf = b""

    @classmethod
    def connect(cls, address: tuple[str, int]) -> "Line":
        return cls(socket.create_connection(address, timeout=IO_TIMEOUT))

    def line(self) -> bytes:
        for _ in range(100_000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread {self.buf!r}")
            self.buf += chunk
        raise AssertionError("line too long")

    def reply(self) -> tuple[int, list[str]]:
        lines = []
        for _ in range(1000):
            text = self.line().decode("utf-8", "replace")
            lines.append(text)
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), lines
        raise AssertionError("reply with too many lines")

    def cmd(self, text: str, code: int) -> list[str]:
        self.sock.sendall(text.encode() + b"\r\n")
        got, lines = self.reply()
        assert got == code, f"{text!r}: expected {code}, got {lines}"
        return lines

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def data(self) -> bytes:
        """Message data up to CRLF.CRLF, dot-unstuffed."""
        lines = []
        for _ in range(1_000_000):
            line = self.line()
            if line == b".":
                return b"".join(l + b"\r\n" for l in lines)
            lines.append(line[1:] if line.startswith(b".") else line)
        raise AssertionError("message too long")

    def close(self) -> None:
        self.sock.close()
