"""`yizhan explain` (issue #16) on dialogues with the real server: swaks talks to yizhan with
AUTH LOGIN and AUTH PLAIN; the transcript it prints is explained in English and Chinese, as
text, Markdown and JSON, and no password, nor its base64, appears in any explanation."""

import base64
import json
import shutil
import subprocess

import pytest

from outbound_helpers import hash_password
from tls_helpers import tls_factory, tls_server  # noqa: F401 - fixtures

PASSWORD = "Sw4ks-secret-9"
USER = "auth@test.example"

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


def swaks_session(srv, mechanism):
    done = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{srv.port}", "--from", USER, "--to", "user2@test.example",
         "--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD,
         "--helo", "client.example", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def explain(yizhan_bin, text, *args):
    """`yizhan explain ARGS` with `text` on standard input (None: none)."""
    done = subprocess.run([str(yizhan_bin), "explain", *args], input=text or "",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_a_swaks_session_explained_without_its_secrets(server_factory, yizhan_bin, mechanism):
    extra = (f'[auth]\nrequire_tls = false\n\n'
             f'[[mailbox]]\naddress = "{USER}"\n'
             f'password = "{hash_password(yizhan_bin, PASSWORD)}"\n')
    srv = server_factory(extra=extra)
    transcript = swaks_session(srv, mechanism)
    secrets = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
               base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()]
    for lang in ("en", "zh"):
        for fmt in ("text", "markdown", "json"):
            out = explain(yizhan_bin, transcript, "--lang", lang, "--format", fmt)
            for secret in secrets:
                assert secret not in out, (lang, fmt, secret)
            assert USER in out, (lang, fmt)
    text = explain(yizhan_bin, transcript)
    assert "235: authentication succeeded" in text, text
    assert "the client authenticated without TLS" in text, text
    assert "the envelope at DATA: from <auth@test.example> to <user2@test.example>" in text
    zh = explain(yizhan_bin, transcript, "--lang", "zh")
    assert "回复路径缓冲区" in zh and "转发路径缓冲区" in zh, zh
    parsed = json.loads(explain(yizhan_bin, transcript, "--format", "json"))
    assert parsed["entries"][0]["direction"] == "server"
    assert any(f["key"] == "auth_in_clear" for f in parsed["findings"])


def test_a_broken_capture_is_refused(tmp_path, yizhan_bin):
    capture = tmp_path / "x.pcap"
    capture.write_bytes(bytes([0xd4, 0xc3, 0xb2, 0xa1]) + b"\0" * 20)
    done = subprocess.run([str(yizhan_bin), "explain", str(capture)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 65 and "capture" in done.stderr, done.stderr


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_a_recorded_session_keeps_no_secret_and_is_explained(server_factory, yizhan_bin,
                                                             mechanism):
    extra = (f'[auth]\nrequire_tls = false\n\n[record]\nnetworks = ["127.0.0.0/8"]\n\n'
             f'[[mailbox]]\naddress = "{USER}"\n'
             f'password = "{hash_password(yizhan_bin, PASSWORD)}"\n')
    srv = server_factory(extra=extra)
    swaks_session(srv, mechanism)

    def sessions(*args):
        done = subprocess.run([str(yizhan_bin), "sessions", "--config", str(srv.config), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    import time
    deadline = time.monotonic() + 20
    while not json.loads(sessions("list", "--json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    [header] = json.loads(sessions("list", "--json"))
    assert header["listener"] == "smtp" and header["client"].startswith("127.0.0.1:")
    [path] = list((srv.data_dir / "sessions").iterdir())
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_text()
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
                   base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()):
        assert secret not in raw, secret
    assert f"user name `{USER}`" in raw, raw
    assert "header fields:" in raw and "Subject" in raw, raw
    shown = sessions("show", header["id"][:8])
    assert "C: EHLO client.example" in shown and "S: 235 " in shown, shown
    done = subprocess.run([str(yizhan_bin), "explain", "--config", str(srv.config), "--session",
                           header["id"]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "235: authentication succeeded" in done.stdout
    assert "message text:" in done.stdout and "the client authenticated without TLS" in done.stdout
    zh = subprocess.run([str(yizhan_bin), "explain", "-c", str(srv.config), "--session",
                         header["id"], "--lang", "zh"], capture_output=True, text=True,
                        timeout=60)
    assert "回复路径缓冲区" in zh.stdout, zh.stdout


class Capture:
    """tshark capturing one port on loopback, while the block runs (bounded waits)."""

    def __init__(self, port, path):
        self.port, self.path = port, path

    def __enter__(self):
        import os
        import time
        self.proc = subprocess.Popen(
            ["tshark", "-q", "-i", "lo", "-f", f"tcp port {self.port}", "-w", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = b""
        deadline = time.monotonic() + 15
        os.set_blocking(self.proc.stderr.fileno(), False)
        while b"Capturing on" not in started and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            started += self.proc.stderr.read() or b""
            time.sleep(0.05)
        if b"Capturing on" not in started:
            self.proc.kill()
            pytest.skip(f"tshark cannot capture on lo: {started.decode(errors='replace')}")
        return self

    def __exit__(self, *exc):
        import time
        time.sleep(0.5)  # the last packets reach the file
        self.proc.terminate()
        self.proc.wait(timeout=15)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_a_capture_is_explained(server_factory, yizhan_bin, tmp_path):
    extra = (f'[auth]\nrequire_tls = false\n\n[[mailbox]]\naddress = "{USER}"\n'
             f'password = "{hash_password(yizhan_bin, PASSWORD)}"\n')
    srv = server_factory(extra=extra)
    pcap = tmp_path / "session.pcapng"
    with Capture(srv.port, pcap):
        swaks_session(srv, "LOGIN")
    out = explain(yizhan_bin, None, str(pcap), "--port", str(srv.port))
    assert f"== connection 1: 127.0.0.1:" in out and f"-> 127.0.0.1:{srv.port}" in out, out
    for part in ("S: 220 mx.test.example", "C: EHLO client.example", "C: AUTH LOGIN",
                 f"C: [user name `{USER}` (base64)]", "235: authentication succeeded",
                 "C: QUIT", "221: service closing the transmission channel"):
        assert part in out, part
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in out
    zh = explain(yizhan_bin, None, str(pcap), "--port", str(srv.port), "--lang", "zh")
    assert "回复路径缓冲区" in zh
    without = subprocess.run([str(yizhan_bin), "explain", str(pcap)], capture_output=True,
                             text=True, timeout=60)
    assert without.returncode == 65 and "--port" in without.stderr, without.stderr


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_a_starttls_capture_shows_where_tls_begins(tls_server, yizhan_bin, tmp_path):
    from tls_helpers import OTHER as TLS_OTHER, PASSWORD as TLS_PASSWORD, USER as TLS_USER
    port = tls_server.ports["submission"]
    pcap = tmp_path / "tls.pcapng"
    with Capture(port, pcap):
        s = tls_server.secure_client("submission")
        s.login(TLS_USER, TLS_PASSWORD)
        s.sendmail(TLS_USER, [TLS_OTHER], b"Subject: captured\r\n\r\nsecret body\r\n")
        s.quit()
    out = explain(yizhan_bin, None, str(pcap), "--port", str(port))
    assert "C: STARTTLS" in out and "-- TLS established (STARTTLS)" in out, out
    assert "-- encrypted, " in out and " octets (TLS)" in out, out
    assert "secret body" not in out and TLS_PASSWORD not in out


def test_a_queued_message_names_its_recorded_session(server_factory, yizhan_bin):
    import smtplib
    import time

    from outbound_helpers import TestDns
    from test_admin import get
    dns = TestDns({"far.example": [("RCODE", "SERVFAIL")]})
    try:
        extra = (f'[record]\nnetworks = ["127.0.0.0/8"]\n\n'
                 f'[delivery]\ndns_servers = ["127.0.0.1:{dns.port}"]\n')
        srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]}, extra=extra)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as s:
            s.sendmail("me@test.example", ["you@far.example"], b"Subject: kept\r\n\r\nx\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page = json.loads(get(srv, "/api/queue")[1])
            recordings = json.loads(get(srv, "/api/recordings")[1])["recordings"]
            if page["total"] == 1 and recordings:
                break
            time.sleep(0.1)
        [message] = page["messages"]
        [recording] = recordings
        assert message["recording"] == recording["id"], (message, recording)
        session = json.loads(get(srv, f"/api/recordings/{recording['id']}")[1])
        assert any(e["x"].upper().startswith("MAIL FROM:<ME@TEST.EXAMPLE>") for e in session["entries"])
        shown = subprocess.run([str(yizhan_bin), "queue", "--config", str(srv.config), "show",
                                message["id"]], capture_output=True, text=True, timeout=60)
        assert f"Session:  {recording['id']}" in shown.stdout, shown.stdout
    finally:
        dns.stop()
