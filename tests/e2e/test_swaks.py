"""swaks, an SMTP client nobody here wrote (tier T3), against the real server.

swaks exit codes (swaks(1) EXIT CODES): 0 ok, 23 MAIL refused, 24 no RCPT accepted,
26 message refused after DATA.
"""

import base64
import email
import shutil
import subprocess
from email import policy

import pytest

from conftest import assert_delivered

SENDER = "swaks@client.example"

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed "
                                "(scripts/test installs it; apt-get install swaks)")


def swaks(srv, *args: str, data: bytes | None = None, workdir=None) -> subprocess.CompletedProcess:
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(srv.port), "--helo",
           "client.test.example", "--timeout", "10"]
    if data is not None:
        path = srv.workdir / "swaks-data.eml"
        path.write_bytes(data)
        cmd += ["--data", f"@{path}", "--no-data-fixup"]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def raw_data(message: bytes) -> bytes:
    """What to give swaks with --no-data-fixup: the dot-stuffed message and the final dot;
    swaks adds the last CRLF itself."""
    stuffed = b"".join((b"." + l if l.startswith(b".") else l) for l in message.splitlines(keepends=True))
    return stuffed + b"."


def test_swaks_delivery_is_byte_exact(server):
    message = (
        b"From: swaks <swaks@client.example>\r\n"
        b"To: user@test.example\r\n"
        b"Subject: swaks exact\r\n"
        b"\r\n"
        b".a leading dot\r\n"
        b"..two leading dots\r\n"
        b".\r\n"
        b"8-bit: \xe4\xf6\xfc \xc3\xa4\r\n"
        b"end\r\n"
    )
    r = swaks(server, "--to", "user@test.example", "--from", SENDER, data=raw_data(message))
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, message, rcpt="user@test.example")


def test_swaks_pipelined_two_recipients_and_a_refusal(server):
    r = swaks(server, "--pipeline", "--to", "user@test.example,nobody@test.example,user2@test.example",
              "--from", SENDER, "--header", "Subject: swaks pipeline", "--body", "pipelined body")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert "550 5.1.1" in out
    for rcpt in ("user@test.example", "user2@test.example"):
        [path] = server.wait_mail(rcpt)
        data = path.read_bytes()
        assert b"Subject: swaks pipeline\n" in data
        assert b"pipelined body" in data
        assert data.startswith(f"Return-Path: <{SENDER}>\n".encode())
    assert server.maildir("nobody@test.example") == []


def test_swaks_helo_protocol(server):
    r = swaks(server, "--protocol", "SMTP", "--to", "list@test.example", "--from", SENDER,
              "--header", "Subject: swaks helo")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert " -> HELO client.test.example" in out
    for rcpt in ("user@test.example", "user2@test.example"):
        [path] = server.wait_mail(rcpt)
        assert b"with SMTP " in path.read_bytes()


def test_swaks_null_sender(server):
    r = swaks(server, "--to", "postmaster@test.example", "--from", "<>", "--header", "Subject: bounce")
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    [path] = server.wait_mail("postmaster@test.example")
    assert path.read_bytes().startswith(b"Return-Path: <>\n")


@pytest.mark.parametrize("rcpt,reply", [
    ("nobody@test.example", "550 5.1.1"),
    ("someone@elsewhere.example", "550 5.7.1"),
    ("moved@test.example", "551 5.1.6"),
])
def test_swaks_refused_recipient(server, rcpt, reply):
    r = swaks(server, "--to", rcpt, "--from", SENDER)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 24, out  # no RCPT accepted
    assert reply in out
    assert server.all_delivered() == []


def test_swaks_message_over_size_limit(server_factory):
    srv = server_factory(smtp={"max_message_size": 5000})
    message = b"Subject: too big\r\n\r\n" + b"y" * 70 + b"\r\n"
    r = swaks(srv, "--to", "user@test.example", "--from", SENDER, data=raw_data(message * 100))
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 26, out  # refused after DATA
    assert "552 5.3.4" in out
    assert srv.all_delivered() == []


def test_swaks_attachment(server):
    payload = bytes(range(256)) * 8
    att = server.workdir / "blob.bin"
    att.write_bytes(payload)
    r = swaks(server, "--to", "user2@test.example", "--from", SENDER, "--header", "Subject: mime",
              "--attach", f"@{att}")
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    [path] = server.wait_mail("user2@test.example")
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    parts = [p for p in msg.walk() if p.get_filename() == "blob.bin"]
    assert len(parts) == 1
    assert parts[0].get_payload(decode=True) == payload
    assert base64.b64encode(payload)[:40] in path.read_bytes().replace(b"\n", b"")
