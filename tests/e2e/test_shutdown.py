"""Graceful shutdown (STYLE.md 14, docs/configuration.md `shutdown_grace`).

On SIGTERM (or SIGINT) yizhan stops accepting connections, answers idle sessions
`421` (RFC 5321 3.8), lets a transaction in flight finish within `shutdown_grace` seconds
(its 250 is sent only once the message is durable), then answers 421 and exits with 0.
"""

import signal
import socket
import time

import pytest

from conftest import assert_delivered, wait_until

SENDER = "sender@client.example"
MESSAGE = b"Subject: in flight\r\n\r\n" + b"".join(b"line %04d of the message\r\n" % i for i in range(200))


def start_data(srv, rcpt="user@test.example"):
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{rcpt}>", 250)
    c.expect("DATA", 354)
    return c


def new_connection_refused(port: int) -> bool:
    """True if a new connection is refused, or accepted only to be told 421 and closed."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return True
    try:
        data = s.recv(512)
        return data == b"" or data.startswith(b"421")
    except OSError:
        return True
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_in_flight_transaction_finishes_idle_session_gets_421(server_factory, sig):
    srv = server_factory(top={"shutdown_grace": 10})
    busy = start_data(srv)
    half = len(MESSAGE) // 2
    busy.send(MESSAGE[:half])
    idle = srv.raw()
    idle.expect("EHLO idle.test.example", 250)

    t0 = time.monotonic()
    srv.signal(sig)

    # The idle session is told 421 and closed, without waiting for the grace period.
    code, lines = idle.reply()
    assert code == 421, lines
    assert idle.at_eof()
    assert time.monotonic() - t0 < 5
    # No new sessions are served any more.
    assert new_connection_refused(srv.port)
    assert srv.running(), "the server must wait for the transaction in flight"

    # The transaction in flight finishes and gets its 250 (the message is durable).
    busy.send(MESSAGE[half:] + b".\r\n")
    code, lines = busy.reply()
    assert code == 250, lines
    # Then its QUIT, sent just after, still gets 221 (the session lingers a moment for it).
    busy.send(b"QUIT\r\n")
    code, lines = busy.reply()
    assert code == 221, lines
    assert srv.wait(timeout=15) == 0

    # Delivered exactly once, whether before the exit or after a restart.
    srv.start()
    [path] = srv.wait_mail("user@test.example")
    assert_delivered(path, SENDER, MESSAGE)
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert len(srv.maildir("user@test.example")) == 1
    assert srv.stop() == 0


def test_grace_expiry_answers_421_and_keeps_nothing(server_factory):
    srv = server_factory(top={"shutdown_grace": 1})
    busy = start_data(srv)
    busy.send(MESSAGE[:100])  # and never finishes
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    code, lines = busy.reply()
    waited = time.monotonic() - t0
    assert code == 421, lines
    assert 0.5 <= waited < 6, waited
    assert busy.at_eof()
    assert srv.wait(timeout=10) == 0
    # The half message was never acknowledged, and nothing of it survives a restart.
    srv.start()
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert srv.all_delivered() == []
    assert srv.stop() == 0


def test_sigterm_on_an_idle_server_exits_0_quickly(server_factory):
    srv = server_factory()  # default grace 30 s: nothing is in flight, so no waiting
    t0 = time.monotonic()
    assert srv.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert new_connection_refused(srv.port)


def test_messages_acknowledged_before_shutdown_survive_it(server_factory):
    # Acknowledged but perhaps not yet delivered when the server stops: delivered after restart.
    srv = server_factory()
    for i in range(5):
        c = start_data(srv, "user2@test.example")
        c.send(b"Subject: before stop %d\r\n\r\nx\r\n.\r\n" % i)
        assert c.reply()[0] == 250
        c.close()
    assert srv.stop() == 0
    srv.start()
    files = srv.wait_mail("user2@test.example", 5)
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert len(srv.maildir("user2@test.example")) == 5
    subjects = sorted(f.read_bytes().split(b"Subject: ")[1].split(b"\n")[0] for f in files)
    assert subjects == [b"before stop %d" % i for i in range(5)]
