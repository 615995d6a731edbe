"""Fixtures for the end-to-end suite: the real `yizhan` binary on 127.0.0.1:0 with a temp data dir.

Tiers T2/T3/T5 of DESIGN.md: the server is started as a child process, spoken to over TCP with
Python's smtplib, a raw socket client and swaks, and killed or stopped by signals. Nothing here
uses the internet or system DNS.

The binary is found in this order: `$YIZHAN_BIN`, `$CARGO_TARGET_DIR/debug/yizhan`,
`<repo>/target/debug/yizhan`. Build it first (`cargo build`); `scripts/test` does.

Every wait is bounded in time (a deadline) and in count (a loop limit); every server started by a
test is killed at teardown if the test left it running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: How long a delivery may take to appear in a Maildir before a test fails.
DELIVERY_TIMEOUT = 10.0
#: How long the server may take to report `ready`.
START_TIMEOUT = 10.0
#: Socket timeout for every client read.
IO_TIMEOUT = 10.0
#: Polling step for every bounded wait.
POLL_STEP = 0.02

HOSTNAME = "mx.test.example"
DOMAIN = "test.example"
#: A mailbox whose local part is not ASCII (RFC 6531); NFC UTF-8 bytes.
UTF8_USER = "jösé@test.example"

READY_RE = re.compile(r"ready listen=127\.0\.0\.1:(\d+)")
ADMIN_RE = re.compile(r"admin=127\.0\.0\.1:(\d+)")


def find_binary() -> Path:
    """The yizhan binary under test, or a clear failure saying how to build it."""
    candidates = []
    if os.environ.get("YIZHAN_BIN"):
        candidates.append(Path(os.environ["YIZHAN_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "yizhan")
    candidates.append(REPO / "target" / "debug" / "yizhan")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(
        "yizhan binary not found (tried %s); run `cargo build` or set YIZHAN_BIN"
        % ", ".join(str(c) for c in candidates),
        pytrace=False,
    )


def toml_value(v) -> str:
    """A Python value as TOML (strings, ints, bools, lists of those)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        # A JSON string with non-ASCII kept is a valid TOML basic string.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def sample_config(data_dir: Path, top: dict | None = None, smtp: dict | None = None,
                  extra: str = "") -> str:
    """The issue's sample configuration, on 127.0.0.1:0, with `data_dir` in the temp dir.

    `top` adds top-level keys (e.g. shutdown_grace), `smtp` keys of `[smtp]`, `extra` raw TOML
    appended at the end (e.g. another `[[domain]]`).
    """
    lines = [f"hostname = {toml_value(HOSTNAME)}", f"data_dir = {toml_value(str(data_dir))}"]
    for k, v in (top or {}).items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += ["", "[[listener]]", 'address = "127.0.0.1:0"', 'kind = "smtp"', "", "[smtp]"]
    for k, v in (smtp or {}).items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += [
        "",
        "[[domain]]",
        f"name = {toml_value(DOMAIN)}",
        "",
        "[[mailbox]]",
        'address = "user@test.example"',
        'full_name = "Test User"',
        "",
        "[[mailbox]]",
        'address = "user2@test.example"',
        "",
        "[[mailbox]]",
        f"address = {toml_value(UTF8_USER)}",
        "",
        "[[alias]]",
        'address = "list@test.example"',
        'members = ["user@test.example", "user2@test.example"]',
        "",
        "[[relocated]]",
        'address = "moved@test.example"',
        'new_address = "moved@elsewhere.example"',
        "",
    ]
    if "[admin]" not in extra:
        # Any free port: servers of parallel tests never clash on the default 8025.
        lines += ["[admin]", 'address = "127.0.0.1:0"', ""]
    return "\n".join(lines) + "\n" + extra


def safe_name(name: str) -> str:
    """Mirror of `yizhan_delivery::maildir::safe_name`: the folder name of a domain or local part."""
    out = []
    for i, c in enumerate(name):
        keep = (c == "." and i > 0) or (c.isascii() and (c.isalnum() or c in "_+=-")) or not c.isascii()
        if keep:
            out.append(c)
        else:
            out.extend("%%%02X" % b for b in c.encode())
    return "".join(out)


class Server:
    """One `yizhan serve` process with its own config file and data dir."""

    def __init__(self, binary: Path, workdir: Path, config_text: str):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config = workdir / "yizhan.toml"
        self.config.write_text(config_text, encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.admin_port: int | None = None
        self.starts = 0
        self.log_path: Path | None = None

    # ---- process control ----

    def start(self) -> "Server":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = self.workdir / f"server.{self.starts}.log"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
                env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / POLL_STEP) + 1):
            m = READY_RE.search(self.log())
            if m:
                self.port = int(m.group(1))
                admin = ADMIN_RE.search(self.log())
                self.admin_port = int(admin.group(1)) if admin else None
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"yizhan exited with {self.proc.returncode} before ready:\n{self.log()}")
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_STEP)
        self.kill()
        pytest.fail(f"yizhan not ready within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        """Everything the current process wrote to stderr/stdout."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        """Waits for the process to exit; returns its exit code (negative: killed by a signal)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (crash) and reap."""
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def restart(self) -> "Server":
        """Kills the process if still running, then starts it again on the same data dir."""
        self.kill()
        return self.start()

    # ---- clients ----

    def smtp(self, ehlo: bool = True) -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test.example",
                         timeout=IO_TIMEOUT)
        if ehlo:
            code, _ = s.ehlo()
            assert code == 250
        return s

    def raw(self, source: str | None = None, greet: bool = True) -> "RawClient":
        c = RawClient(self.port, source)
        if greet:
            code, lines = c.reply()
            assert code == 220, lines
        return c

    # ---- mailboxes ----

    def mailbox_dir(self, addr: str) -> Path:
        local, _, domain = addr.rpartition("@")
        return self.data_dir / "mail" / safe_name(domain.lower()) / safe_name(local)

    def maildir(self, addr: str) -> list[Path]:
        """The delivered files (new/ and cur/) of a mailbox, sorted by name."""
        box = self.mailbox_dir(addr)
        files = []
        for sub in ("new", "cur"):
            d = box / sub
            if d.is_dir():
                files += [p for p in d.iterdir() if p.is_file()]
        return sorted(files, key=lambda p: p.name)

    def all_delivered(self) -> list[Path]:
        """Every file in new/ or cur/ of every Maildir under data_dir/mail."""
        root = self.data_dir / "mail"
        if not root.is_dir():
            return []
        return sorted(p for p in root.glob("*/*/*/*") if p.parent.name in ("new", "cur") and p.is_file())

    def wait_mail(self, addr: str, count: int = 1, timeout: float = DELIVERY_TIMEOUT) -> list[Path]:
        """Polls the Maildir until it holds `count` files; fails after `timeout` seconds."""
        files = wait_until(lambda: (lambda f: f if len(f) >= count else None)(self.maildir(addr)),
                           timeout, f"{count} message(s) in the Maildir of {addr}")
        return files

    def spool_empty(self) -> bool:
        """No body file and no row in the index (small bodies live in the row, not in bodies/)."""
        bodies = self.data_dir / "spool" / "bodies"
        if bodies.is_dir() and any(bodies.iterdir()):
            return False
        index = self.data_dir / "spool" / "index.sqlite"
        if not index.exists():
            return True
        db = sqlite3.connect(index, timeout=5)
        try:
            (rows,) = db.execute("SELECT COUNT(*) FROM queue").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return True
            raise
        finally:
            db.close()
        return rows == 0


def wait_until(probe, timeout: float, what: str):
    """Calls `probe` until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_STEP) + 2):
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_STEP)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class RawClient:
    """A line-level SMTP client over a plain socket, for what smtplib cannot say."""

    def __init__(self, port: int, source: str | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(IO_TIMEOUT)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """One reply line without CRLF. Raises ConnectionError at EOF."""
        for _ in range(100_000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread {self.buf!r}")
            self.buf += chunk
        raise AssertionError("reply line too long")

    def reply(self) -> tuple[int, list[str]]:
        """One whole (possibly multi-line) reply: (code, [text lines including the code])."""
        lines = []
        for _ in range(10_000):
            raw = self.line()
            text = raw.decode("utf-8", errors="replace")
            lines.append(text)
            assert re.match(r"^\d{3}[ -]", text) or re.match(r"^\d{3}$", text), f"bad reply line {raw!r}"
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), lines
        raise AssertionError("reply with too many lines")

    def cmd(self, line: str | bytes) -> tuple[int, list[str]]:
        """Sends one command line (CRLF added) and reads its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line: str | bytes, code: int) -> list[str]:
        got, lines = self.cmd(line)
        assert got == code, f"{line!r}: expected {code}, got {lines}"
        return lines

    def at_eof(self, timeout: float = IO_TIMEOUT) -> bool:
        """True if the server closes the connection (after any unread bytes) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            for _ in range(1000):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, socket.timeout):
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def on_disk(wire: bytes) -> bytes:
    """A message as a Maildir file holds it: CRLF on the wire, LF on disk (issue #12)."""
    return wire.replace(b"\r\n", b"\n")


def split_delivery(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Splits a delivered file into (Return-Path line, Received header, the message as received).

    The server prepends exactly `Return-Path: <sender>\\n` and one folded `Received:` header;
    every line ends with LF alone.
    """
    assert data.startswith(b"Return-Path: <"), data[:200]
    assert b"\r\n" not in data, "CRLF in a Maildir file"
    i = data.index(b"\n") + 1
    rp = data[:i]
    assert data[i:].startswith(b"Received: "), data[:400]
    j = i
    for _ in range(100):
        k = data.index(b"\n", j) + 1
        j = k
        if not data[j:j + 1] in (b"\t", b" "):
            break
    return rp, data[i:j], data[j:]


def assert_delivered(path: Path, sender: str, message: bytes, rcpt: str | None = None) -> bytes:
    """Asserts that a Maildir file is the message, byte for byte, after the trace lines."""
    data = path.read_bytes()
    rp, received, rest = split_delivery(data)
    assert rp == b"Return-Path: <" + sender.encode("utf-8") + b">\n"
    assert HOSTNAME.encode() in received
    if rcpt is not None:
        assert b"for <" + rcpt.encode("utf-8") + b">" in received, received
    want = on_disk(message)
    assert rest == want, f"delivered body differs:\n{rest[:500]!r}\n!=\n{want[:500]!r}"
    return received


def _service_account() -> None:
    """The account `yizhan serve` drops to when started as root (issue #13), made by
    scripts/test (CI), or here when missing."""
    import pwd
    try:
        pwd.getpwnam("yizhan")
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "yizhan"], check=True)


@pytest.fixture(autouse=True)
def service_account_can_reach_tmp(tmp_path):
    """Started as root, `yizhan serve` drops to its service account, which must be able to
    pass through the directories above each test's data directory. pytest makes them 0700:
    open them to searching (o+x), as an administrator would for a data directory."""
    if os.geteuid() != 0:
        return
    _service_account()
    for d in [tmp_path, *tmp_path.parents]:
        if d == Path("/"):
            break
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, (mode & 0o7777) | 0o011)


@pytest.fixture(scope="session")
def yizhan_bin() -> Path:
    return find_binary()


@pytest.fixture
def server_factory(yizhan_bin, tmp_path, request):
    """`server_factory(top=..., smtp=..., extra=..., start=True)` -> a started Server.

    Every server made here is killed at teardown if still running.
    """
    made: list[Server] = []

    def make(top=None, smtp=None, extra="", start=True, name=None) -> Server:
        workdir = tmp_path / (name or f"srv{len(made)}")
        workdir.mkdir()
        srv = Server(yizhan_bin, workdir, sample_config(workdir / "data", top, smtp, extra))
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        try:
            srv.kill()
        except Exception:  # noqa: BLE001 - teardown must reach every server
            pass
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for srv in made:
            # Shown in the "Captured stdout teardown" section of the failure.
            print(f"---- {srv.workdir.name}: last lines of {srv.log_path} ----")
            print("\n".join(srv.log().splitlines()[-40:]))


@pytest.fixture
def server(server_factory) -> Server:
    """The sample configuration with VRFY and EXPN enabled."""
    return server_factory(smtp={"vrfy": "enabled", "expn": "enabled"})


def pytest_report_header(config):
    try:
        return f"yizhan binary: {find_binary()}"
    except BaseException:  # noqa: BLE001 - only informative
        return "yizhan binary: not found"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
