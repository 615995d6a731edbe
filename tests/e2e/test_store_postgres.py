"""The queue on PostgreSQL (`[store] kind = "postgres"`), one node: messages accepted over
SMTP are committed to the database before the 250 (a body of several chunks too), delivered
from there into the Maildir, and removed from the database; `yizhan queue` lists, holds and
releases a message in the database; a node killed with SIGKILL while a message waits delivers
it when it comes back. The password comes from a file and is
never printed."""

from __future__ import annotations

import json
import smtplib
import subprocess

from conftest import DELIVERY_TIMEOUT, IO_TIMEOUT, assert_delivered, wait_until
from ca_helpers import make_ca_and_leaf
from pg_helpers import Postgres, postgres  # noqa: F401


def on_postgres(server_factory, pg, tmp_path, start=True):
    secret = tmp_path / "pg-password"
    secret.write_text("not-needed-with-trust\n")
    secret.chmod(0o644)
    return server_factory(start=start, extra=f"""
[store]
kind = "postgres"
url = "{pg.url}"
password_file = "{secret}"
node = "node-1"
""")


def test_messages_go_through_the_database(server_factory, postgres, tmp_path):
    srv = on_postgres(server_factory, postgres, tmp_path)
    assert "shared queue on PostgreSQL" in srv.log()
    assert "not-needed-with-trust" not in srv.log()
    # sslmode unset (prefer) and a server without TLS: said once, at start.
    assert srv.log().count("queue database are in clear text") == 1, srv.log()
    big = b"Subject: big\r\n\r\n" + b"".join(b"line %07d of a long message\r\n" % i
                                                for i in range(30000))
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        for n in range(5):
            s.sendmail("sender@client.example", ["user@test.example"],
                       b"Subject: pg %d\r\n\r\nthrough the database\r\n" % n)
        s.sendmail("sender@client.example", ["user2@test.example"], big)
    mails = srv.wait_mail("user@test.example", count=5)
    assert len(mails) == 5
    [mail] = srv.wait_mail("user2@test.example")
    assert_delivered(mail, "sender@client.example", big)
    wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0",
               DELIVERY_TIMEOUT, "the database queue to empty")
    assert postgres.sql("SELECT count(*) FROM yizhan_bodies") == "0"


def test_a_node_killed_after_the_250_delivers_when_it_returns(server_factory, postgres, tmp_path):
    srv = on_postgres(server_factory, postgres, tmp_path, start=False)
    srv.config.write_text(srv.config.read_text() + '\n[queue]\nretry_initial = "1s"\n')
    # The mailbox cannot be made (a file stands where its directory goes): delivery is
    # deferred, so the message waits in the database when the node dies.
    blocker = srv.mailbox_dir("user@test.example")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    srv.start()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("sender@client.example", ["user@test.example"],
                   b"Subject: survives\r\n\r\nkept by PostgreSQL\r\n")
    wait_until(lambda: "delivery deferred" in srv.log() or "4.2.0" in srv.log(),
               DELIVERY_TIMEOUT, "a deferred delivery")
    # `yizhan queue` works on the shared queue: it lists the message, holds and releases it.
    queue = lambda *args: subprocess.run(  # noqa: E731
        [str(srv.binary), "queue", *args, "--config", str(srv.config)],
        capture_output=True, text=True, timeout=60)
    listed = queue("list", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    [message] = data["messages"] if isinstance(data, dict) else data
    held = queue("hold", message["id"])
    assert held.returncode == 0, held.stdout + held.stderr
    assert postgres.sql(f"SELECT held FROM yizhan_messages WHERE id = '{message['id']}'") == "t"
    released = queue("release", message["id"])
    assert released.returncode == 0, released.stdout + released.stderr
    assert postgres.sql(f"SELECT held FROM yizhan_messages WHERE id = '{message['id']}'") == "f"
    srv.kill()
    assert postgres.sql("SELECT count(*) FROM yizhan_messages") == "1"
    blocker.unlink()
    srv.start()
    [mail] = srv.wait_mail("user@test.example")
    assert b"kept by PostgreSQL" in mail.read_bytes()
    wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0",
               DELIVERY_TIMEOUT, "the database queue to empty")


def test_the_database_is_reached_over_tls_and_its_certificate_verified(server_factory, yizhan_bin,
                                                                      tmp_path):
    """`sslmode=require` with the database's CA in `[store] ca_file`: the node's connections
    are encrypted (PostgreSQL's own `pg_stat_ssl` says so) and mail goes through; without the
    CA the node refuses to start, saying why and what to do, once."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_leaf(certs, "127.0.0.1", san="IP:127.0.0.1")
    pg = Postgres(tmp_path / "pg", tls=(cert, key))
    try:
        url = f"{pg.url}?sslmode=require"
        srv = server_factory(extra=f"""
[store]
kind = "postgres"
url = "{url}"
ca_file = "{ca}"
node = "node-tls"
""")
        assert "tls required, verified against system authorities + 1 from ca_file" in srv.log()
        assert "in clear text" not in srv.log()
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail("sender@client.example", ["user@test.example"],
                       b"Subject: tls\r\n\r\nover an encrypted queue\r\n")
        [mail] = srv.wait_mail("user@test.example")
        assert b"over an encrypted queue" in mail.read_bytes()
        encrypted = pg.sql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                           "USING (pid) WHERE a.application_name = 'yizhan node-tls' AND s.ssl")
        clear = pg.sql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                       "USING (pid) WHERE a.application_name = 'yizhan node-tls' AND NOT s.ssl")
        assert int(encrypted) >= 1 and clear == "0", (encrypted, clear)
        srv.stop()

        # Without the CA: not trusted, the node does not start, and says what to do.
        config = tmp_path / "untrusted.toml"
        config.write_text(srv.config.read_text().replace(f'ca_file = "{ca}"\n', ""))
        done = subprocess.run([str(yizhan_bin), "serve", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert "invalid peer certificate" in out and "[store] ca_file" in out, out
        assert out.count("invalid peer certificate") == 1, out
    finally:
        pg.stop()


def test_while_the_database_is_down_mail_is_deferred_never_accepted(server_factory, postgres,
                                                                    tmp_path):
    """PostgreSQL stops (as if it crashed): a message cannot be committed, so DATA is answered
    451 4.3.0 and the client keeps it; once PostgreSQL is back the node reconnects on its own
    and the next message is accepted and delivered."""
    srv = on_postgres(server_factory, postgres, tmp_path)
    postgres.stop()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        try:
            s.sendmail("sender@client.example", ["user@test.example"],
                       b"Subject: not now\r\n\r\nthe database is down\r\n")
            raise AssertionError("accepted while the database was down")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 451 and b"4.3.0" in e.smtp_error, e
    postgres.start()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("sender@client.example", ["user@test.example"],
                   b"Subject: now\r\n\r\nthe database is back\r\n")
    [mail] = srv.wait_mail("user@test.example")
    assert b"the database is back" in mail.read_bytes()
    assert b"the database is down" not in mail.read_bytes()
    wait_until(lambda: postgres.sql("SELECT count(*) FROM yizhan_messages") == "0",
               DELIVERY_TIMEOUT, "the database queue to empty")
