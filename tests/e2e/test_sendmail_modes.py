"""sendmail's other modes (issue #15): -bv says where each recipient's mail would go without
sending anything; -q (and -qRDOMAIN) makes the running server try its queue now; --help
prints the usage; -bs is refused with the reason."""

import subprocess


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


def test_help_and_refused_modes(server_factory, yizhan_bin):
    srv = server_factory()
    helped = subprocess.run([str(yizhan_bin), "sendmail", "--help"], capture_output=True,
                            timeout=60)
    assert helped.returncode == 0 and b"Usage: yizhan sendmail" in helped.stdout
    bs = sendmail(yizhan_bin, srv, "-bs")
    assert bs.returncode == 64
    assert b"-bs (SMTP on standard input) is not supported" in bs.stderr
