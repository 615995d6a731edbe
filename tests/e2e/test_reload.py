"""Reloading the configuration (issue #13): SIGHUP and `yizhan reload`.

The new file is validated first; a bad one is refused with its problems (file, line, key,
reason), logged, and the old configuration keeps serving. Sessions in flight finish under the
configuration they started with. What needs a restart (listeners, data_dir, user) is named.
"""

import re
import signal
import subprocess

from conftest import wait_until
from tls_helpers import make_cert, peer_common_name, tls_factory  # noqa: F401 (fixture)


def reload(yizhan_bin, srv):
    return subprocess.run([str(yizhan_bin), "reload", "--config", str(srv.config)],
                          capture_output=True, text=True, timeout=60)


def rcpt(srv, address):
    with srv.smtp() as s:
        s.mail("sender@client.example")
        code, _ = s.rcpt(address)
        return code


def test_reload_applies_a_new_directory_and_limits(server_factory, yizhan_bin):
    srv = server_factory()
    assert rcpt(srv, "new@test.example") == 550
    # A session opened before the reload keeps the old rules to its end.
    old = srv.smtp()
    old.mail("sender@client.example")
    text = srv.config.read_text()
    text += '\n[[mailbox]]\naddress = "new@test.example"\n'
    text = text.replace('hostname = "mx.test.example"', 'hostname = "mx2.test.example"')
    srv.config.write_text(text)
    done = reload(yizhan_bin, srv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "configuration reloaded", done.stdout
    assert rcpt(srv, "new@test.example") == 250
    with srv.smtp() as s:
        assert "mx2.test.example" in s.ehlo_resp.decode()
    code, _ = old.rcpt("new@test.example")
    assert code == 550, "the session in flight keeps the configuration it started with"
    old.quit()
    log = srv.log()
    assert 'configuration reloaded why="yizhan reload"' in log
    assert "hostname: mx2.test.example" in log


def test_a_bad_file_is_refused_and_the_old_one_keeps_serving(server_factory, yizhan_bin):
    srv = server_factory(smtp={"max_recipients": 100})
    good = srv.config.read_text()
    srv.config.write_text(good.replace("max_recipients = 100", "max_recipients = 5")
                          + '\n[[mailbox]]\naddress = "new@test.example"\n')
    done = reload(yizhan_bin, srv)
    assert done.returncode == 1, done
    assert re.search(r"yizhan\.toml:\d+:\d+: smtp\.max_recipients: 5 is below the minimum 100",
                     done.stderr), done.stderr
    assert "the server keeps its configuration" in done.stderr
    assert rcpt(srv, "new@test.example") == 550, "the old directory still serves"

    # SIGHUP with the same bad file: logged with file, line, key and reason; nothing changes.
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in srv.log(), 10, "the refusal in the log")
    log = srv.log()
    assert re.search(r"yizhan\.toml:\d+:\d+: smtp\.max_recipients: 5 is below", log), log
    assert 'reload refused; the configuration in force is unchanged why="SIGHUP"' in log
    assert srv.running()
    assert rcpt(srv, "new@test.example") == 550

    # Fixed: taken at once.
    srv.config.write_text(good + '\n[[mailbox]]\naddress = "new@test.example"\n')
    srv.signal(signal.SIGHUP)
    wait_until(lambda: 'configuration reloaded why="SIGHUP"' in srv.log(), 10, "the reload")
    assert rcpt(srv, "new@test.example") == 250


def test_tls_files_are_switched_or_refused_by_the_server(tls_factory, yizhan_bin, tmp_path):
    """The server checks what the client cannot: the TLS files load. New files are used by
    new connections at once; a key that does not load is refused with the server's reason
    (`yizhan reload` exits non-zero) and the certificate in use stays."""
    srv = tls_factory()
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    cert, key = make_cert(renewed, "renewed.test.example")
    text = srv.config.read_text()
    srv.config.write_text(text.replace(str(srv.cert), str(cert)).replace(str(srv.key), str(key)))
    done = reload(yizhan_bin, srv)
    assert done.returncode == 0, done.stderr
    with srv.client("submissions") as s:
        assert peer_common_name(s.sock) == "renewed.test.example"

    broken = renewed / "broken.pem"
    broken.write_text("not a key\n")
    srv.config.write_text(text.replace(str(srv.cert), str(cert)).replace(str(srv.key), str(broken)))
    done = reload(yizhan_bin, srv)
    assert done.returncode == 1, done
    assert "TLS: " in done.stderr and "broken.pem" in done.stderr, done.stderr
    assert "reload refused" in srv.log()
    with srv.client("submissions") as s:
        assert peer_common_name(s.sock) == "renewed.test.example"

    # Turning TLS off needs a restart (listeners are built with it): named, TLS stays on.
    no_tls = text[:text.index("[tls]")] + text[text.index("[auth]"):]
    srv.config.write_text(no_tls.replace('kind = "submissions"', 'kind = "submission"'))
    done = reload(yizhan_bin, srv)
    assert done.returncode == 0, done.stderr
    assert "not applied, needs a restart: tls (still on)" in done.stdout, done.stdout
    assert "not applied, needs a restart: listener (still" in done.stdout, done.stdout
    with srv.client("submissions") as s:
        assert peer_common_name(s.sock) == "renewed.test.example"


def test_what_needs_a_restart_is_named(server_factory, yizhan_bin):
    srv = server_factory()
    text = srv.config.read_text()
    text = text.replace('kind = "smtp"', 'kind = "smtp"\n\n'
                        '[[listener]]\naddress = "127.0.0.1:0"\nkind = "submission"')
    srv.config.write_text(text)
    done = reload(yizhan_bin, srv)
    assert done.returncode == 0, done.stderr
    assert "not applied, needs a restart: listener (still 127.0.0.1:0 (smtp))" in done.stdout
    assert "changed in the file, but only a restart applies it" in srv.log()
    assert rcpt(srv, "user@test.example") == 250
