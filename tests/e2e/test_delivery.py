"""Deliveries over TCP with Python's smtplib and a raw socket (issue #3, T2/T3).

RFC 5321 3.3 (mail transaction), 3.6 / 3.9 (aliases, 251/551), 4.5.1 (postmaster),
4.5.2 (transparency: dot-stuffing), 4.4 (trace: Return-Path, Received); RFC 6152 (8BITMIME).
"""

import smtplib

import pytest

from conftest import assert_delivered, on_disk

SENDER = "sender@client.example"


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: <sender@client.example>\r\n"
        b"To: <user@test.example>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Message-ID: <" + subject.replace(" ", "-").encode() + b"@client.example>\r\n"
        b"\r\n" + body
    )


# ---- RFC 5321 3.3: a transaction delivers the data byte for byte ----

def test_smtplib_delivery_is_byte_exact(server):
    body = (
        b"Line one.\r\n"
        b"  leading spaces and trailing spaces  \r\n"
        b"\ttab\r\n"
        b"\r\n"
        b"a line with a lone dot inside . here\r\n"
        b"last line\r\n"
    )
    msg = message("smtplib exact", body)
    with server.smtp() as s:
        refused = s.sendmail(SENDER, ["user@test.example"], msg)
    assert refused == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg, rcpt="user@test.example")
    assert server.maildir("user2@test.example") == []


def test_two_recipients_get_one_copy_each(server):
    msg = message("two rcpts")
    with server.smtp() as s:
        assert s.sendmail(SENDER, ["user@test.example", "user2@test.example"], msg) == {}
    [a] = server.wait_mail("user@test.example")
    [b] = server.wait_mail("user2@test.example")
    assert_delivered(a, SENDER, msg)
    assert_delivered(b, SENDER, msg)


def test_recipient_case_is_folded_to_the_mailbox(server):
    # Mailbox addresses are compared case-insensitively (docs/configuration.md).
    msg = message("case")
    with server.smtp() as s:
        assert s.sendmail(SENDER, ["USER@Test.Example"], msg) == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg)


def test_null_reverse_path_is_accepted_and_traced(server):
    # RFC 5321 4.5.5: MAIL FROM:<> (bounces) must be accepted; Return-Path: <> at delivery.
    msg = message("null sender")
    with server.smtp() as s:
        assert s.sendmail("<>", ["user@test.example"], msg) == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, "", msg)


# ---- refusals: 550 unknown user, 550 relay, 551 relocated ----

def test_unknown_user_is_550(server):
    with server.smtp() as s:
        s.mail(SENDER)
        code, text = s.rcpt("nobody@test.example")
        assert code == 550, text
        assert text.startswith(b"5.1.1"), text
        s.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail(SENDER, ["nobody@test.example"], message("x"))
        assert e.value.recipients["nobody@test.example"][0] == 550
    assert server.all_delivered() == []


def test_relay_is_refused(server):
    with server.smtp() as s:
        s.mail(SENDER)
        code, text = s.rcpt("someone@elsewhere.example")
        assert code == 550, text
        assert text.startswith(b"5.7.1"), text
    assert server.all_delivered() == []


def test_relocated_user_is_551_with_the_new_address(server):
    # RFC 5321 3.4 / 4.2.2: 551 User not local; please try <forward-path>.
    with server.smtp() as s:
        s.mail(SENDER)
        code, text = s.rcpt("moved@test.example")
    assert code == 551, text
    assert b"<moved@elsewhere.example>" in text


@pytest.mark.parametrize("rcpt", ["postmaster", "postmaster@test.example", "PostMaster@TEST.example"])
def test_postmaster_is_accepted_and_delivered(server, rcpt):
    # RFC 5321 4.5.1: postmaster (bare or @domain, any case) must be accepted.
    msg = message("to postmaster")
    with server.smtp() as s:
        s.mail(SENDER)
        code, text = s.rcpt(rcpt)
        assert code == 250, text
        code, text = s.data(msg)
        assert code == 250, text
    [path] = server.wait_mail("postmaster@test.example")
    assert_delivered(path, SENDER, msg)


def test_alias_delivers_a_copy_to_each_member(server):
    msg = message("to the list")
    with server.smtp() as s:
        assert s.sendmail(SENDER, ["list@test.example"], msg) == {}
    [a] = server.wait_mail("user@test.example")
    [b] = server.wait_mail("user2@test.example")
    assert_delivered(a, SENDER, msg)
    assert_delivered(b, SENDER, msg)


def test_accepted_recipients_are_delivered_when_others_are_refused(server):
    msg = message("mixed")
    with server.smtp() as s:
        refused = s.sendmail(SENDER, ["nobody@test.example", "user2@test.example",
                                      "moved@test.example"], msg)
    assert set(refused) == {"nobody@test.example", "moved@test.example"}
    assert refused["moved@test.example"][0] == 551
    [b] = server.wait_mail("user2@test.example")
    assert_delivered(b, SENDER, msg)


# ---- RFC 5321 4.5.2: transparency ----

def test_dot_stuffed_lines_are_unstuffed(server):
    # Sent raw, so the stuffing is ours and not smtplib's.
    wire = (
        b"Subject: dots\r\n"
        b"\r\n"
        b"..\r\n"
        b"...\r\n"
        b"..leading dot\r\n"
        b"no dot . here\r\n"
        b". \r\n"
        b"..\r\n"
    )
    expected = (
        b"Subject: dots\r\n"
        b"\r\n"
        b".\r\n"
        b"..\r\n"
        b".leading dot\r\n"
        b"no dot . here\r\n"
        b" \r\n"  # RFC 5321 4.5.2: the first dot of a line is removed, whatever follows
        b".\r\n"
    )
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    c.send(wire + b".\r\n")
    code, lines = c.reply()
    assert code == 250, lines
    c.expect("QUIT", 221)
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, expected)


def test_smtplib_dot_stuffing_round_trips(server):
    msg = message("smtplib dots", b".\r\n..\r\n.x\r\n")
    with server.smtp() as s:
        assert s.sendmail(SENDER, ["user@test.example"], msg) == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg)


def test_crlf_dot_crlf_inside_a_line_does_not_end_data(server):
    msg = b"Subject: not the end\r\n\r\nx.\r\n.y\r\n"
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: not the end\r\n\r\nx.\r\n..y\r\n.\r\n")
    assert c.reply()[0] == 250
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg)


# ---- RFC 6152: 8-bit bodies ----

def test_8bit_body_is_delivered_byte_exact(server):
    # Every octet but NUL, CR and LF (those only as CRLF), as RFC 6152 allows.
    octets = bytes(b for b in range(1, 256) if b not in (0x0A, 0x0D))
    body = b"".join(octets[i:i + 60] + b"\r\n" for i in range(0, len(octets), 60))
    body += "Grüße, 你好, Привет\r\n".encode("utf-8")
    body += b"\xff\xfe\x80\x81\r\n"
    msg = message("8bit", body)
    with server.smtp() as s:
        assert b"8BITMIME" in s.ehlo_resp
        assert s.sendmail(SENDER, ["user@test.example"], msg, mail_options=["BODY=8BITMIME"]) == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg)


def test_large_message_is_delivered_byte_exact(server):
    # ~1 MiB in many lines, below the default 10 MiB SIZE limit.
    lines = [(b"%06d " % i) + b"abcdefghijklmnopqrstuvwxyz" * 3 + b"\r\n" for i in range(12000)]
    msg = message("large", b"".join(lines))
    with server.smtp() as s:
        assert s.sendmail(SENDER, ["user2@test.example"], msg) == {}
    [path] = server.wait_mail("user2@test.example")
    assert_delivered(path, SENDER, msg)


# ---- RFC 2920: a pipelined batch ----

def test_pipelined_batch(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    msg = message("pipelined")
    # One write: the whole envelope and DATA, with a refused recipient in the middle.
    c.send(
        f"MAIL FROM:<{SENDER}>\r\n"
        "RCPT TO:<user@test.example>\r\n"
        "RCPT TO:<nobody@test.example>\r\n"
        "RCPT TO:<user2@test.example>\r\n"
        "DATA\r\n".encode()
    )
    codes = [c.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 550, 250, 354]
    # Then the message, a second pipelined transaction and QUIT in another write.
    msg2 = message("pipelined two")
    c.send(
        msg + b".\r\n"
        + f"RSET\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<list@test.example>\r\nNOOP\r\nDATA\r\n".encode()
    )
    codes = [c.reply()[0] for _ in range(6)]
    assert codes == [250, 250, 250, 250, 250, 354]
    c.send(msg2 + b".\r\nQUIT\r\n")
    assert [c.reply()[0] for _ in range(2)] == [250, 221]
    assert c.at_eof()
    files = server.wait_mail("user@test.example", 2)
    files2 = server.wait_mail("user2@test.example", 2)
    assert sorted(f.read_bytes().endswith(on_disk(msg)) for f in files) == [False, True]
    assert sorted(f.read_bytes().endswith(on_disk(msg)) for f in files2) == [False, True]
    for f in files + files2:
        data = f.read_bytes()
        assert data.endswith(on_disk(msg)) or data.endswith(on_disk(msg2))
