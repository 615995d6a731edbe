"""The seed's RFC 821 verbs and the modern extensions, spoken over a raw TCP socket.

RFC 821 3.1-3.5 / RFC 5321 4.1.1 (HELO, MAIL, RCPT, DATA, SEND, SOML, SAML, RSET, VRFY, EXPN,
HELP, NOOP, QUIT, TURN), RFC 5321 4.1.1.3 + appendix C (source routes), RFC 3030 (BDAT),
RFC 6531 (SMTPUTF8), RFC 5321 2.3.8 (bare LF never ends or injects a message).
"""

import pytest

from conftest import UTF8_USER, assert_delivered, wait_until

SENDER = "sender@client.example"


def msg(subject: str) -> bytes:
    return b"Subject: " + subject.encode() + b"\r\n\r\nbody of " + subject.encode() + b"\r\n"


def transaction(c, mail_cmd: str, rcpts: list[str], data: bytes) -> list[str]:
    """MAIL-like command, RCPTs (all must be 250), DATA, data; returns the final reply lines."""
    c.expect(mail_cmd, 250)
    for r in rcpts:
        c.expect(f"RCPT TO:<{r}>", 250)
    c.expect("DATA", 354)
    c.send(data + b".\r\n")
    code, lines = c.reply()
    assert code == 250, lines
    return lines


# ---- HELO / NOOP / RSET / QUIT (RFC 821 4.1.1) ----

def test_helo_then_mail_delivers(server):
    c = server.raw()
    assert c.expect("HELO client.test.example", 250)[0].startswith("250 mx.test.example")
    transaction(c, f"MAIL FROM:<{SENDER}>", ["user@test.example"], msg("helo"))
    assert c.expect("QUIT", 221)
    assert c.at_eof()
    [path] = server.wait_mail("user@test.example")
    received = assert_delivered(path, SENDER, msg("helo"))
    assert b"with SMTP " in received, received  # RFC 5321 4.4 / RFC 3848: HELO is "SMTP"


def test_noop_and_rset(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect("NOOP", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("NOOP", 250)  # touches no buffer
    c.expect("RSET", 250)  # clears all three buffers
    c.expect("DATA", 503)  # no transaction any more
    c.expect("RCPT TO:<user@test.example>", 503)
    # A fresh transaction still works after RSET.
    transaction(c, f"MAIL FROM:<{SENDER}>", ["user2@test.example"], msg("after rset"))
    c.expect("QUIT", 221)
    [path] = server.wait_mail("user2@test.example")
    assert_delivered(path, SENDER, msg("after rset"))
    assert server.maildir("user@test.example") == []


def test_turn_is_refused(server):
    # DESIGN.md: TURN is never honoured for an unauthenticated client (RFC 821 TURN steals mail).
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("TURN")
    assert code == 502, lines


def test_help(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("HELP")
    assert code == 214, lines
    assert len(lines) > 1
    text = " ".join(lines)
    for verb in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "SEND"):
        assert verb in text, (verb, lines)
    code, lines = c.cmd("HELP MAIL")
    assert code == 214, lines
    assert "MAIL FROM:" in " ".join(lines)


# ---- SEND / SOML / SAML (RFC 821 3.4): no terminal session is attached in these tests ----

def test_send_without_terminal_is_450(server):
    c = server.raw()
    c.expect("HELO client.test.example", 250)
    c.expect(f"SEND FROM:<{SENDER}>", 250)
    code, lines = c.cmd("RCPT TO:<user@test.example>")
    assert code == 450, lines
    c.expect("DATA", 554)  # no valid recipient (RFC 5321 3.3)
    c.expect("QUIT", 221)
    assert server.all_delivered() == []


@pytest.mark.parametrize("verb", ["SOML", "SAML"])
def test_soml_saml_deliver_to_the_mailbox(server, verb):
    # SOML: terminal if active, else mailbox; SAML: terminal (if any) and mailbox.
    c = server.raw()
    c.expect("HELO client.test.example", 250)
    transaction(c, f"{verb} FROM:<{SENDER}>", ["user@test.example"], msg(verb))
    c.expect("QUIT", 221)
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg(verb))


def test_send_soml_saml_switched_off_are_502(server_factory):
    srv = server_factory(smtp={"send_soml_saml": False, "help": False})
    c = srv.raw()
    c.expect("HELO client.test.example", 250)
    for verb in ("SEND", "SOML", "SAML"):
        code, lines = c.cmd(f"{verb} FROM:<{SENDER}>")
        assert code == 502, lines
    assert c.cmd("HELP")[0] == 502


# ---- source routes and the null reverse-path (RFC 821 3.1, RFC 5321 4.1.1.3, appendix C) ----

def test_source_route_delivers_to_the_mailbox(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<@a.example,@b.example:user@test.example>", 250)
    code, lines = c.cmd("RCPT TO:<@a.example:nobody@test.example>")
    assert code == 550, lines
    c.expect("DATA", 354)
    c.send(msg("routed") + b".\r\n")
    assert c.reply()[0] == 250
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, msg("routed"))
    assert server.maildir("user2@test.example") == []


def test_null_reverse_path(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    transaction(c, "MAIL FROM:<>", ["user2@test.example"], msg("bounce"))
    [path] = server.wait_mail("user2@test.example")
    assert_delivered(path, "", msg("bounce"))


# ---- VRFY / EXPN (RFC 5321 3.5, 7.3) ----

def test_expn_on_an_alias_lists_its_members(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("EXPN list@test.example")
    assert code == 250, lines
    assert len(lines) == 2
    text = "\n".join(lines)
    assert "<user@test.example>" in text and "<user2@test.example>" in text
    code, lines = c.cmd("EXPN user@test.example")  # a mailbox expands to itself
    assert code == 250 and len(lines) == 1 and "user@test.example" in lines[0], lines
    code, lines = c.cmd("EXPN nolist@test.example")
    assert code == 550, lines


def test_vrfy_answers_from_the_directory(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("VRFY user@test.example")
    assert code == 250 and "user@test.example" in lines[0], lines
    code, lines = c.cmd("VRFY list@test.example")
    assert code == 250 and "list@test.example" in lines[0], lines
    code, lines = c.cmd("VRFY nobody@test.example")
    assert code == 550, lines
    code, lines = c.cmd("VRFY moved@test.example")
    assert code == 551 and "<moved@elsewhere.example>" in lines[0], lines


@pytest.mark.parametrize("query,expected", [
    ("user@test.example", "250 2.1.5 Test User <user@test.example>"),
    ("Test", "250 2.1.5 Test User <user@test.example>"),  # a word of the full name
    ("user2@test.example", "250 2.1.5 <user2@test.example>"),
])
def test_vrfy_reply_is_name_and_one_bracketed_mailbox(server, query, expected):
    # RFC 5321 3.5.1: "250 Fred Smith <Smith@USC-ISIF.ARPA>".
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd(f"VRFY {query}")
    assert lines == [expected]


def test_vrfy_expn_safe_defaults(server_factory):
    # Defaults: VRFY "cannot-verify" (252), EXPN "disabled" (502) - RFC 5321 3.5.3, 7.3.
    srv = server_factory()
    c = srv.raw()
    c.expect("EHLO client.test.example", 250)
    assert c.cmd("VRFY user@test.example")[0] == 252
    assert c.cmd("VRFY nobody@test.example")[0] == 252  # no directory leak
    assert c.cmd("EXPN list@test.example")[0] == 502


# ---- BDAT (RFC 3030) ----

def test_bdat_chunks_are_delivered_byte_exact(server):
    chunk1 = b"Subject: bdat\r\n\r\n"
    chunk2 = b"no dot-stuffing in BDAT:\r\n.\r\n..leading dots stay\r\n"
    chunk3 = b"last line\r\n"
    c = server.raw()
    code, lines = c.cmd("EHLO client.test.example")
    assert "250-CHUNKING" in lines or "250 CHUNKING" in lines, lines
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
    assert c.reply()[0] == 250
    # Two chunks pipelined in one write (RFC 3030 4.2).
    c.send(b"BDAT %d\r\n" % len(chunk2) + chunk2 + b"BDAT %d LAST\r\n" % len(chunk3) + chunk3)
    assert c.reply()[0] == 250
    code, lines = c.reply()
    assert code == 250 and "queued as" in lines[0], lines
    c.expect("QUIT", 221)
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, chunk1 + chunk2 + chunk3)


def test_bdat_zero_last_ends_the_message(server):
    body = b"Subject: bdat 0\r\n\r\nx\r\n"
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user2@test.example>", 250)
    c.send(b"BDAT %d\r\n" % len(body) + body)
    assert c.reply()[0] == 250
    assert c.cmd("BDAT 0 LAST")[0] == 250
    [path] = server.wait_mail("user2@test.example")
    assert_delivered(path, SENDER, body)


# ---- SMTPUTF8 (RFC 6531) ----

def test_smtputf8_mailbox_is_delivered_byte_exact(server):
    sender = "sëndér@client.example"
    data = ("From: sëndér <sëndér@client.example>\r\n"
            f"To: {UTF8_USER}\r\n"
            "Subject: ¡Hola! 你好\r\n\r\nÜnïcödé body\r\n").encode("utf-8")
    c = server.raw()
    code, lines = c.cmd("EHLO client.test.example")
    assert any(line[4:] == "SMTPUTF8" for line in lines), lines
    c.expect(f"MAIL FROM:<{sender}> SMTPUTF8 BODY=8BITMIME", 250)
    c.expect(f"RCPT TO:<{UTF8_USER}>", 250)
    c.expect("DATA", 354)
    c.send(data + b".\r\n")
    assert c.reply()[0] == 250
    [path] = server.wait_mail(UTF8_USER)
    received = assert_delivered(path, sender, data)
    assert b"UTF8SMTP" in received, received  # RFC 6531 4.3: "with UTF8SMTP"


def test_non_ascii_address_without_smtputf8_is_553(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    code, lines = c.cmd(f"RCPT TO:<{UTF8_USER}>")
    assert code == 553 and "5.6.7" in lines[0], lines


def test_smtplib_smtputf8(server):
    data = f"To: {UTF8_USER}\r\nSubject: smtplib utf8 ✓\r\n\r\n✓\r\n".encode("utf-8")
    with server.smtp() as s:
        assert s.has_extn("smtputf8")
        refused = s.sendmail("ünï@client.example", [UTF8_USER], data,
                             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    [path] = server.wait_mail(UTF8_USER)
    assert_delivered(path, "ünï@client.example", data)


# ---- RFC 5321 2.3.8 / DESIGN.md invariant 6: bare LF is never an end of data ----

@pytest.mark.parametrize("smuggle", [
    b"\n.\n",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\r",
])
def test_bare_lf_smuggling_is_refused_and_nothing_is_delivered(server, smuggle):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<user@test.example>", 250)
    c.expect("DATA", 354)
    c.send(
        b"Subject: innocent\r\n\r\nhello" + smuggle
        + b"MAIL FROM:<evil@attacker.example>\r\n"
        b"RCPT TO:<user2@test.example>\r\n"
        b"DATA\r\n"
        b"Subject: smuggled\r\n\r\nevil\r\n"
        b".\r\n"
    )
    code, lines = c.reply()
    assert code == 550 and lines[0].startswith("550 5.6.0"), lines
    # The session is still in order: nothing of the data was taken as commands.
    c.expect("NOOP", 250)
    c.expect("RCPT TO:<user@test.example>", 503)
    # A marker message after it; once it is delivered and the spool is empty, nothing else came.
    transaction(c, f"MAIL FROM:<{SENDER}>", ["user@test.example", "user2@test.example"], msg("marker"))
    c.expect("QUIT", 221)
    [a] = server.wait_mail("user@test.example")
    [b] = server.wait_mail("user2@test.example")
    assert_delivered(a, SENDER, msg("marker"))
    assert_delivered(b, SENDER, msg("marker"))
    wait_until(server.spool_empty, 10, "an empty spool")
    assert len(server.all_delivered()) == 2


def test_smtplib_rejects_nothing_ordinary(server):
    # Sanity for the above: smtplib turns bare LF into CRLF, so the same text goes through.
    with server.smtp() as s:
        # (only for str messages; bytes are sent as they are)
        assert s.sendmail(SENDER, ["user@test.example"], "Subject: lf\n\nhello\n.\nworld\n") == {}
    [path] = server.wait_mail("user@test.example")
    assert_delivered(path, SENDER, b"Subject: lf\r\n\r\nhello\r\n.\r\nworld\r\n")


def test_unknown_command_is_500_and_session_survives(server):
    c = server.raw()
    c.expect("EHLO client.test.example", 250)
    code, lines = c.cmd("FROB")
    assert code == 500, lines
    c.expect("NOOP", 250)
