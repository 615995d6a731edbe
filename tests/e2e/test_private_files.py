"""Private files (issue #13): mail and the queue are readable by the service user only.

The server runs with umask 077: Maildir folders 0700, message files 0600, the spool's folders
0700 and every spool file (the SQLite database, its -wal and -shm, the lock, bodies) 0600.
A data directory left open by an earlier release is tightened at start.
"""

import os
import stat

from conftest import wait_until


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_delivered_mail_and_the_spool_are_private(server_factory):
    srv = server_factory(start=False)
    # An open data directory from before (umask 022, or an older release).
    (srv.data_dir / "spool").mkdir(parents=True)
    os.chmod(srv.data_dir, 0o755)
    os.chmod(srv.data_dir / "spool", 0o755)
    srv.start()
    with srv.smtp() as s:
        s.sendmail("sender@client.example", ["user@test.example"],
                   b"Subject: private\r\n\r\nFor my eyes only.\r\n")
    [path] = srv.wait_mail("user@test.example")
    assert mode(path) == 0o600, oct(mode(path))
    box = srv.mailbox_dir("user@test.example")
    for d in (box, box / "new", box / "tmp", box / "cur", box.parent, box.parent.parent):
        if d.exists():
            assert mode(d) == 0o700, (d, oct(mode(d)))
    assert mode(srv.data_dir) == 0o700
    spool = srv.data_dir / "spool"
    assert mode(spool) == 0o700
    files = [p for p in spool.rglob("*") if p.is_file()]
    assert files, "the spool has its database"
    for p in files:
        assert mode(p) == 0o600, (p, oct(mode(p)))
    for p in spool.rglob("*"):
        if p.is_dir():
            assert mode(p) == 0o700, (p, oct(mode(p)))
    wait_until(srv.spool_empty, 10, "an empty spool")
    assert "made files in the data directory private" in srv.log()
