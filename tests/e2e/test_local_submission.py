"""Local submission by other users (issue #13): no world-writable directory.

Root and the server's account drop mail into the maildrop (0700). Any other local user's
`sendmail` hands the message to the running server through `public/submit.sock`; the server
learns the user from the kernel (SO_PEERCRED), queues the message with that uid, and makes
their own login the envelope sender whatever `-f` said. `mailq` shows such a user only their
own messages; the spool, the maildrop and the mailboxes stay out of their reach.
"""

import os
import stat
import subprocess

import pytest

from conftest import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")

USER = "nobody"
GROUP = "nogroup"


def as_nobody(yizhan_bin, srv, args, message=b""):
    env = {"PATH": "/usr/bin:/bin", "LOGNAME": USER, "USER": USER, "HOME": "/nonexistent"}
    return subprocess.run([str(yizhan_bin), *args, "--config", str(srv.config)] if args[0] != "sendmail"
                          else [str(yizhan_bin), "sendmail", "-C", str(srv.config), *args[1:]],
                          input=message, capture_output=True, timeout=60, env=env,
                          user=USER, group=GROUP, extra_groups=[])


def test_another_user_queues_as_themselves(server_factory, yizhan_bin):
    srv = server_factory()
    os.chmod(srv.config, 0o644)
    data = srv.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(data / "public").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(data / "public" / "submit.sock").st_mode) == 0o666
    for private in ("maildrop", "spool"):
        assert stat.S_IMODE(os.stat(data / private).st_mode) == 0o700, private

    done = as_nobody(yizhan_bin, srv, ["sendmail", "-f", "ceo@bank.example", "user@test.example"],
                     b"Subject: from nobody\r\n\r\nHello.\r\n")
    assert done.returncode == 0, done.stderr
    [path] = srv.wait_mail("user@test.example")
    text = path.read_text()
    assert "Return-Path: <nobody@mx.test.example>" in text, text
    assert "from userid 65534" in text, text
    assert "ceo@bank.example" not in text.split("\r\n\r\n")[0].split("Subject")[0], text
    assert "untrusted local sender: envelope sender set to the login" in srv.log()

    # Nothing private is in reach: not the data directory's listing, the maildrop, the spool.
    for path in (data, data / "maildrop" / "new", data / "spool"):
        probe = subprocess.run(["ls", str(path)], capture_output=True, user=USER, group=GROUP,
                               extra_groups=[], timeout=10)
        assert probe.returncode != 0, (path, probe.stdout)
    probe = subprocess.run(["touch", str(data / "maildrop" / "new" / "forged")],
                           capture_output=True, user=USER, group=GROUP, extra_groups=[], timeout=10)
    assert probe.returncode != 0


def test_mailq_shows_another_user_only_their_own(server_factory, yizhan_bin):
    # Remote mail for a smarthost that refuses connections stays queued.
    srv = server_factory(extra='[[smarthost]]\nhost = "127.0.0.1"\nport = 1\n')
    os.chmod(srv.config, 0o644)
    root = subprocess.run([str(yizhan_bin), "sendmail", "-C", str(srv.config),
                           "someone@remote.example"], input=b"Subject: root's\r\n\r\nx\r\n",
                          capture_output=True, timeout=60)
    assert root.returncode == 0, root.stderr
    mine = as_nobody(yizhan_bin, srv, ["sendmail", "friend@remote.example"],
                     b"Subject: nobody's\r\n\r\nx\r\n")
    assert mine.returncode == 0, mine.stderr

    def both_queued():
        out = subprocess.run([str(yizhan_bin), "queue", "list", "--config", str(srv.config)],
                             capture_output=True, text=True, timeout=30).stdout
        return out if "someone@remote.example" in out and "friend@remote.example" in out else None

    wait_until(both_queued, 10, "both messages in root's view of the queue")
    listed = subprocess.run([str(yizhan_bin), "sendmail", "-bp", "-C", str(srv.config)],
                            capture_output=True, text=True, timeout=30, user=USER, group=GROUP,
                            extra_groups=[], env={"PATH": "/usr/bin:/bin"})
    assert listed.returncode == 0, listed.stderr
    assert "friend@remote.example" in listed.stdout, listed.stdout
    assert "nobody@mx.test.example" in listed.stdout, listed.stdout
    assert "someone@remote.example" not in listed.stdout, listed.stdout


def test_without_the_server_another_user_is_told_to_retry(server_factory, yizhan_bin):
    srv = server_factory()
    os.chmod(srv.config, 0o644)
    srv.stop()
    done = as_nobody(yizhan_bin, srv, ["sendmail", "user@test.example"], b"Subject: x\r\n\r\nx\r\n")
    assert done.returncode == 75, done
    assert b"cannot reach the server's submission socket" in done.stderr, done.stderr
    # Root still drops into the maildrop while the server is down; it is queued at start.
    root = subprocess.run([str(yizhan_bin), "sendmail", "-C", str(srv.config), "user@test.example"],
                          input=b"Subject: while down\r\n\r\nx\r\n", capture_output=True, timeout=60)
    assert root.returncode == 0, root.stderr
    srv.start()
    wait_until(lambda: srv.maildir("user@test.example"), 10, "the dropped message")


def test_a_slow_submission_never_holds_up_a_shutdown(server_factory):
    """A client that connects to the submission socket and stops half way through its message
    is answered "try again later" at SIGTERM; the server ends within its grace period."""
    import socket
    import time
    srv = server_factory(top={"shutdown_grace": 2})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(srv.data_dir / "public" / "submit.sock"))
    sock.sendall(b'{"op":"submit","sender":"","recipients":["user@test.example"],"size":100}\n')
    sock.sendall(b"Subject: half")
    time.sleep(0.2)
    started = time.monotonic()
    srv.signal(15)
    assert srv.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    sock.settimeout(5)
    answer = sock.recv(4096)
    assert b"shutting down" in answer and b'"temporary":true' in answer, answer
    assert srv.maildir("user@test.example") == []
