"""A packet capture of one STARTTLS + AUTH session on the loopback port, decoded by tshark as
SMTP (RFC 3207): the plaintext part of the dialogue is visible up to `220 Ready to start TLS`,
and nothing after it (AUTH, the password, the message) is readable on the wire.

Skipped when tshark is missing or may not capture (scripts/test installs it as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tls_helpers import PASSWORD, USER, OTHER, tls_factory, tls_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def test_tshark_decodes_starttls_then_sees_only_tls(tls_server, tmp_path, capsys):
    port = tls_server.ports["submission"]
    pcap = tmp_path / "session.pcapng"
    cap = subprocess.Popen(
        ["tshark", "-q", "-i", "lo", "-f", f"tcp port {port}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        # Wait until tshark reports it is capturing (bounded).
        started = b""
        deadline = time.monotonic() + 15
        os.set_blocking(cap.stderr.fileno(), False)
        while b"Capturing on" not in started and time.monotonic() < deadline:
            if cap.poll() is not None:
                break
            chunk = cap.stderr.read() or b""
            started += chunk
            time.sleep(0.05)
        if b"Capturing on" not in started:
            pytest.skip(f"tshark cannot capture on lo: {started.decode(errors='replace')}")
        s = tls_server.secure_client("submission")
        s.login(USER, PASSWORD)
        assert s.sendmail(USER, [OTHER], b"Subject: captured\r\n\r\nsecret body\r\n") == {}
        s.quit()
        time.sleep(0.5)  # let the last packets reach the capture file
    finally:
        cap.terminate()
        cap.wait(timeout=15)
    decoded = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},smtp", "-Y", "smtp or tls",
         "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info"],
        capture_output=True, text=True, timeout=60,
    )
    assert decoded.returncode == 0, decoded.stderr
    with capsys.disabled():  # shown in the suite's output, not only on failure
        print(f"\n---- tshark -d tcp.port=={port},smtp: one STARTTLS + AUTH session ----")
        print(decoded.stdout)
    rows = [line.split("\t") for line in decoded.stdout.splitlines() if line.strip()]
    smtp = [info for _, proto, info in rows if proto == "SMTP"]
    text = "\n".join(smtp)
    for part in ("220 mx.test.example", "C: ehlo", "250-mx.test.example", "C: STARTTLS",
                 "220 2.0.0 Ready to start TLS"):
        assert part in text, f"{part!r} not decoded:\n{text}"
    assert any(proto.startswith("TLS") for _, proto, _ in rows), decoded.stdout
    raw = pcap.read_bytes()
    for secret in (PASSWORD.encode(), b"AUTH", b"secret body"):
        assert secret not in raw, f"{secret!r} visible on the wire"
