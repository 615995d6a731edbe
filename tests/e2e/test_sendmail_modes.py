"""sendmail's other modes (issue #15): -bv says where each recipient's mail would go without
sending anything; -q (and -qRDOMAIN) makes the running server try its queue now; --help
prints the usage; -bs speaks SMTP on standard input and output; -N, -R and -V ask for
delivery status notifications."""

import os
import subprocess

import pytest

from test_local_submission import as_nobody


def sendmail(yizhan_bin, srv, *args, stdin=b""):
    return subprocess.run([str(yizhan_bin), "sendmail", "-C", str(srv.config), *args],
                          input=stdin, capture_output=True, timeout=60)


def test_bv_reports_each_recipient_and_sends_nothing(server_factory, yizhan_bin):
    srv = server_factory()
    done = sendmail(yizhan_bin, srv, "-bv", "user@test.example,list@test.example",
                    "nobody@test.example", "moved@test.example", "x@far.example")
    out = done.stdout.decode()
    assert done.returncode == 67, (done.returncode, out, done.stderr)
    assert "user@test.example: delivered to the local mailbox user@test.example" in out
    assert "list@test.example: delivered to the local mailbox user@test.example; " \
           "delivered to the local mailbox user2@test.example" in out
    assert "nobody@test.example: undeliverable: no such user here (550)" in out
    assert "moved@test.example: undeliverable: the user has moved to moved@elsewhere.example" in out
    assert "x@far.example: relayed to the mail exchangers of far.example" in out
    ok = sendmail(yizhan_bin, srv, "-bv", "user@test.example")
    assert ok.returncode == 0
    assert srv.maildir("user@test.example") == []


def test_q_flushes_the_queue_of_the_running_server(server_factory, yizhan_bin):
    srv = server_factory()
    held = sendmail(yizhan_bin, srv, "-q")
    assert held.returncode == 0, held.stderr
    assert b"flushed 0 recipients in 0 messages" in held.stdout, held.stdout
    site = sendmail(yizhan_bin, srv, "-qRfar.example")
    assert site.returncode == 0 and b"flushed" in site.stdout, site.stderr


def test_help(yizhan_bin):
    helped = subprocess.run([str(yizhan_bin), "sendmail", "--help"], capture_output=True,
                            timeout=60)
    assert helped.returncode == 0 and b"Usage: yizhan sendmail" in helped.stdout


def replies(output: bytes) -> list[str]:
    """The final line of each reply (`250 ...`), in order."""
    return [line for line in output.decode().split("\r\n") if line[3:4] == " "]


BS_SESSION = (b"EHLO client.example\r\n"
              b"MAIL FROM:<me@test.example>\r\n"
              b"RCPT TO:<user@test.example>\r\n"
              b"RCPT TO:<user2@test.example>\r\n"
              b"DATA\r\n"
              b"Subject: over a pipe\r\n\r\n..dot-stuffed line\r\nbye\r\n.\r\n"
              b"QUIT\r\n")


def test_bs_speaks_smtp_on_stdin_and_stdout(server_factory, yizhan_bin):
    srv = server_factory()
    done = sendmail(yizhan_bin, srv, "-bs", stdin=BS_SESSION)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith("220 mx.test.example"), out
    assert "250-PIPELINING" in out and "STARTTLS" not in out and "AUTH" not in out, out
    codes = [line[:3] for line in replies(done.stdout)]
    assert codes == ["220", "250", "250", "250", "250", "354", "250", "221"], out
    for rcpt in ("user@test.example", "user2@test.example"):
        [path] = srv.wait_mail(rcpt)
        text = path.read_bytes()
        assert b"Return-Path: <me@test.example>" in text, text
        assert b"\n.dot-stuffed line\n" in text, text  # unstuffed (Maildir keeps LF)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_bs_for_another_user_goes_through_the_server(server_factory, yizhan_bin):
    srv = server_factory()
    os.chmod(srv.config, 0o644)
    done = as_nobody(yizhan_bin, srv, ["sendmail", "-bs"], BS_SESSION)
    assert done.returncode == 0, done.stderr
    assert [line[:3] for line in replies(done.stdout)][-2:] == ["250", "221"], done.stdout
    [path] = srv.wait_mail("user@test.example")
    # An ordinary user cannot choose the envelope sender, over SMTP either.
    assert b"Return-Path: <nobody@mx.test.example>" in path.read_bytes()


def test_n_r_v_ask_for_reports(server_factory, yizhan_bin):
    srv = server_factory()
    message = b"Subject: report me\r\n\r\nthe text\r\n"
    done = sendmail(yizhan_bin, srv, "-f", "user2@test.example", "-N", "failure,success",
                    "-R", "hdrs", "-V", "env-42", "user@test.example", "nobody@test.example",
                    stdin=message)
    assert done.returncode == 0, done.stderr
    srv.wait_mail("user@test.example")
    reports = srv.wait_mail("user2@test.example", 2)
    texts = [p.read_text(errors="replace") for p in reports]
    failed = next(t for t in texts if "Action: failed" in t)
    assert "Original-Envelope-Id: env-42" in failed, failed
    assert "the text" not in failed, "RET=HDRS: the header section only"
    assert any("Action: delivered" in t for t in texts), texts
    never = sendmail(yizhan_bin, srv, "-N", "never", "nobody@test.example", stdin=message)
    assert never.returncode == 0, never.stderr
    bad = sendmail(yizhan_bin, srv, "-N", "sometimes", "user@test.example", stdin=message)
    assert bad.returncode == 64 and b"-N \"sometimes\"" in bad.stderr, bad.stderr


def test_bs_takes_the_postmaster(server_factory, yizhan_bin):
    srv = server_factory()
    session = (b"HELO me\r\nMAIL FROM:<me@test.example>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n"
               b"Subject: to the postmaster\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    done = sendmail(yizhan_bin, srv, "-bs", stdin=session)
    assert [line[:3] for line in replies(done.stdout)][-2:] == ["250", "221"], done.stdout
    [path] = srv.wait_mail("postmaster@test.example")
    assert b"Subject: to the postmaster" in path.read_bytes()
