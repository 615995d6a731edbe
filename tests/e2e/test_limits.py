"""Limits: SIZE (RFC 1870), recipients per transaction (RFC 5321 4.5.3.1.8), line length
(4.5.3.1.4), error count, and connection limits (max_connections, max_connections_per_ip).
"""

import smtplib
import time

import pytest

from conftest import assert_delivered, wait_until

SENDER = "sender@client.example"
CATCH_ALL = '\n[[domain]]\nname = "many.example"   # no mailboxes: a catch-all\n'


# ---- RFC 1870: SIZE ----

def test_size_declared_over_the_limit_is_552(server_factory):
    srv = server_factory(smtp={"max_message_size": 10000})
    c = srv.raw()
    code, lines = c.cmd("EHLO client.test.example")
    assert "250-SIZE 10000" in lines, lines
    code, lines = c.cmd(f"MAIL FROM:<{SENDER}> SIZE=10001")
    assert code == 552 and lines[0].startswith("552 5.3.4"), lines
    c.expect(f"MAIL FROM:<{SENDER}> SIZE=9000", 250)


def test_data_over_the_limit_is_552_after_the_dot_and_nothing_is_kept(server_factory):
    srv = server_factory(smtp={"max_message_size": 10000})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    # The server reads (and discards) the whole message before it answers.
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20 + b".\r\n")
    code, lines = c.reply()
    assert code == 552 and lines[0].startswith("552 5.3.4"), lines
    # The session goes on, and a message that fits is delivered.
    small = b"Subject: small\r\n\r\n" + (b"y" * 998 + b"\r\n") * 5
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    c.send(small + b".\r\n")
    assert c.reply()[0] == 250
    [path] = srv.wait_mail("user@test.example")
    assert_delivered(path, SENDER, small)
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert len(srv.all_delivered()) == 1


def test_smtplib_size_refusal(server_factory):
    srv = server_factory(smtp={"max_message_size": 10000})
    with srv.smtp() as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail(SENDER, ["user@test.example"], b"Subject: x\r\n\r\n" + b"z" * 20000)
    assert e.value.smtp_code == 552


# ---- RFC 5321 4.5.3.1.8: 1000 recipients in one transaction (the default max_recipients) ----

def send_to_1000(srv) -> tuple[list[str], bytes]:
    """One transaction with 1000 recipients (pipelined in batches of 100, RFC 2920), and one
    recipient more, which is refused with 452 4.5.3 (RFC 5321 4.5.3.1.10)."""
    rcpts = [f"r{i:04d}@many.example" for i in range(1000)]
    body = b"Subject: to a thousand\r\n\r\nhello, all of you\r\n"
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    for start in range(0, 1000, 100):
        c.send("".join(f"RCPT TO:<{r}>\r\n" for r in rcpts[start:start + 100]).encode())
        codes = [c.reply()[0] for _ in range(100)]
        assert codes == [250] * 100, (start, codes)
    code, lines = c.cmd("RCPT TO:<r1000@many.example>")
    assert code == 452 and lines[0].startswith("452 4.5.3"), lines
    c.expect("DATA", 354)
    c.send(body + b".\r\n")
    code, lines = c.reply()
    assert code == 250, lines
    c.expect("QUIT", 221)
    return rcpts, body


def test_1000_recipients_in_one_transaction(server_factory):
    srv = server_factory(extra=CATCH_ALL)
    rcpts, body = send_to_1000(srv)
    # One Maildir file per recipient. The queue runner delivers one recipient after another and
    # records each in the spool (fsync), so this takes 15 s on an idle 2-core machine and up
    # to a minute on a busy one; hence the long (bounded) deadline.
    wait_until(lambda: len(srv.all_delivered()) >= 1000, 90, "1000 deliveries")
    files = srv.all_delivered()
    assert len(files) == 1000
    assert sorted(p.parent.parent.name for p in files) == [r.split("@")[0] for r in rcpts]
    assert {p.parent.parent.parent.name for p in files} == {"many.example"}
    for p in files:
        assert_delivered(p, SENDER, body)
    assert srv.maildir("r1000@many.example") == []


# ---- RFC 5321 4.5.3.1.4: line length; max_errors ----

def test_overlong_command_line_is_refused(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("NOOP " + "x" * 3000)
    assert code == 500, lines
    c.expect("NOOP", 250)


def test_too_many_errors_closes_with_421(server_factory):
    srv = server_factory(smtp={"max_errors": 3})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    codes = []
    for _ in range(10):
        code, _lines = c.cmd("FROB")
        codes.append(code)
        if code == 421:
            break
    assert codes[-1] == 421 and 2 <= len(codes) <= 4, codes
    assert c.at_eof()


def test_data_termination_timeout_ends_a_trickling_message(server_factory):
    """A client sending its message a byte at a time (each byte well within the data block
    timeout) is cut off once the whole message has taken `data_termination_timeout`: 421, the
    connection closed, nothing queued."""
    srv = server_factory(smtp={"data_termination_timeout": "2s", "data_block_timeout": "30s"})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    started = time.monotonic()
    c.sock.settimeout(0.3)
    reply = b""
    for byte in (b"Subject: slow\r\n\r\n" + b"x" * 200)[:40]:  # bounded: 40 bytes, ~12 s
        try:
            c.sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            reply = c.sock.recv(4096)
        except TimeoutError:
            continue
        break
    elapsed = time.monotonic() - started
    assert reply.startswith(b"421 "), reply
    assert 1.5 <= elapsed <= 6, elapsed
    assert "the message data took too long" in srv.log()
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert srv.all_delivered() == []


def test_a_noop_flood_ends_with_421(server_factory):
    """Postfix's junk-command model: past `junk_command_limit` NOOPs each one is an error;
    past `soft_error_limit` errors replies are slowed down; at `max_errors` 421 and close.
    (Before, 5,000 NOOPs were answered at full speed for ever.)"""
    srv = server_factory(smtp={"junk_command_limit": 10, "soft_error_limit": 3,
                               "error_sleep": "200ms", "max_errors": 5})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    codes = []
    started = time.monotonic()
    for _ in range(200):  # bounded: 10 free + 5 errors is the most it can take
        code, _lines = c.cmd("NOOP")
        codes.append(code)
        if code == 421:
            break
    elapsed = time.monotonic() - started
    assert codes == [250] * 14 + [421], codes
    # Errors 3 and 4 (and the 421) waited 200 ms each.
    assert elapsed >= 0.5, elapsed
    assert c.at_eof()


def test_recipients_far_past_the_limit_end_with_421(server_factory):
    srv = server_factory(smtp={"max_recipients": 100, "recipient_overshoot_limit": 20,
                               "max_errors": 3, "soft_error_limit": 3}, extra=CATCH_ALL)
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    codes = []
    for i in range(1000):  # bounded: 100 + 20 + 3 is the most it can take
        code, _lines = c.cmd(f"RCPT TO:<r{i}@many.example>")
        codes.append(code)
        if code == 421 or code is None:
            break
    assert codes[:100] == [250] * 100, codes[:100]
    # 20 free, then three counted errors; the third 452 is followed by the 421.
    assert codes[100:] == [452] * 23 + [421], codes[100:]
    assert c.at_eof()


# ---- connection limits ----

def test_max_connections_extra_gets_421_and_others_still_work(server_factory):
    srv = server_factory(smtp={"max_connections": 3, "max_connections_per_ip": 3})
    held = [srv.raw() for _ in range(3)]
    for c in held:
        c.expect("EHLO client.test.example", 250)
    extra = srv.raw(greet=False)
    code, lines = extra.reply()
    assert code == 421, lines
    assert extra.at_eof()
    # The three held sessions still work, and each delivers a message.
    for i, c in enumerate(held):
        c.expect(f"MAIL FROM:<{SENDER}>", 250)
        c.expect("RCPT TO:<user@test.example>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: held %d\r\n\r\nx\r\n.\r\n" % i)
        assert c.reply()[0] == 250
        c.expect("QUIT", 221)
        assert c.at_eof()
    assert len(srv.wait_mail("user@test.example", 3)) == 3

    # Once they are gone, a new connection is served (the slots were released).
    def greeted():
        c = srv.raw(greet=False)
        try:
            return c.reply()[0] == 220
        finally:
            c.close()
    wait_until(greeted, 10, "a free connection slot")


def test_max_connections_per_ip(server_factory):
    # Loopback is exempt by default (see the next test): no exceptions here.
    srv = server_factory(smtp={"max_connections": 10, "max_connections_per_ip": 2,
                               "limit_exceptions": []})
    held = [srv.raw() for _ in range(2)]
    extra = srv.raw(greet=False)
    code, lines = extra.reply()
    assert code == 421, lines
    assert extra.at_eof()
    # Another address on the loopback network is a different client (Linux routes 127/8 to lo).
    try:
        other = srv.raw(source="127.0.0.2", greet=False)
    except OSError as e:  # pragma: no cover - platforms without 127.0.0.2
        pytest.skip(f"cannot bind 127.0.0.2: {e}")
    assert other.reply()[0] == 220
    other.expect("EHLO other.test.example", 250)
    for c in held:
        c.expect("EHLO client.test.example", 250)
        c.expect("NOOP", 250)
    held[0].expect("QUIT", 221)
    assert held[0].at_eof()

    def greeted():
        c = srv.raw(greet=False)
        try:
            return c.reply()[0] == 220
        finally:
            c.close()
    wait_until(greeted, 10, "a free per-IP slot")


@pytest.mark.parametrize("limits", [
    {"max_connections": 1, "max_connections_per_ip": 1},
    {"max_connections": 5, "max_connections_per_ip": 1, "limit_exceptions": []},
])
def test_connection_limit_reply_has_enhanced_code_4_7_0(server_factory, limits):
    srv = server_factory(smtp=limits)
    held = srv.raw()
    extra = srv.raw(greet=False)
    code, lines = extra.reply()
    assert lines[0].startswith("421 4.7.0 "), lines
    held.close()


def test_loopback_and_relay_networks_are_exempt_from_the_per_address_limit(server_factory):
    """Like Postfix's smtpd_client_event_limit_exceptions = $mynetworks: an application on
    the same host that opens many connections at once is served, not refused with 421."""
    srv = server_factory(smtp={"max_connections": 50, "max_connections_per_ip": 2})
    held = [srv.raw() for _ in range(20)]  # raw() waits for each 220
    for c in held:
        c.expect("NOOP", 250)
    for c in held:
        c.close()
    # The global limit still holds for everyone.
    srv2 = server_factory(smtp={"max_connections": 3, "max_connections_per_ip": 2})
    kept = [srv2.raw() for _ in range(3)]
    extra = srv2.raw(greet=False)
    assert extra.reply()[0] == 421
    for c in kept:
        c.close()



def test_rate_limits_per_address(server_factory):
    """Issue #13: connections, VRFY/EXPN and ETRN per minute per client address (governor);
    loopback is exempt by default, so the test clears the exceptions."""
    srv = server_factory(smtp={"limit_exceptions": [], "connection_rate_limit": 3,
                               "verify_rate_limit": 2, "etrn": True, "etrn_rate_limit": 1,
                               "relay_networks": ["127.0.0.1/32"]})
    c = srv.raw()  # connection 1
    c.expect("EHLO client.test.example", 250)
    codes = [c.cmd("VRFY user")[0] for _ in range(3)]
    assert codes[:2] != [450, 450] and codes[2] == 450, codes
    code, lines = c.cmd("VRFY user")
    assert code == 450 and lines[0].startswith("450 4.7.1"), lines
    assert c.cmd("ETRN test.example")[0] == 250
    assert c.cmd("ETRN test.example")[0] == 458
    for _ in range(2):  # connections 2 and 3
        srv.raw().close()
    extra = srv.raw(greet=False)  # connection 4 within the minute
    code, lines = extra.reply()
    assert code == 421 and "Too many connections from your address" in lines[0], lines
    assert extra.at_eof()
    # Another address is another budget.
    other = srv.raw(source="127.0.0.2", greet=False)
    assert other.reply()[0] == 220
    assert "connection rate limit" in srv.log()


def test_session_lifetime_and_byte_quota_end_with_421(server_factory):
    """Issue #13: a session cannot last or send without bound: `session_lifetime` and
    `max_session_bytes` end it with 421, and a message cut off by them is not queued."""
    # Loopback is exempt by default (a bulk sender on the same host): no exceptions here.
    srv = server_factory(smtp={"session_lifetime": "1s", "limit_exceptions": []})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    started = time.monotonic()
    c.sock.settimeout(0.3)
    reply = b""
    for _ in range(20):  # bounded: 20 NOOPs, one every 0.3 s at most
        try:
            c.sock.sendall(b"NOOP\r\n")
            reply = c.sock.recv(4096)
        except (TimeoutError, OSError):
            continue
        if reply.startswith(b"421"):
            break
        time.sleep(0.2)
    assert reply.startswith(b"421 4.7.0") and b"Session time limit" in reply, reply
    assert 0.8 <= time.monotonic() - started <= 5
    assert "session lifetime reached" in srv.log()

    srv = server_factory(smtp={"max_session_bytes": 5000, "limit_exceptions": []})
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 100)
    code, lines = c.reply()
    assert code == 421 and "Session size limit" in lines[0], lines
    assert c.at_eof()
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert srv.all_delivered() == []
