"""Live operations (issue #15): the live sessions and the delivery log of the admin API, the
event stream (SSE and `yizhan watch`), the RFC 821 terminal (SEND, SOML, SAML delivered to a
user's `yizhan watch --user` or `/api/terminal` stream), and requeue/bounce by filter."""

import base64
import json
import queue
import smtplib
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from conftest import IO_TIMEOUT, wait_until
from outbound_helpers import TestDns, hash_password
from test_admin import get

SENDER = "sender@client.example"
USER = "user@test.example"


class Lines:
    """The output lines of a long-running reader (a process or an HTTP stream), collected by a
    thread so the test can wait for one without blocking forever."""

    def __init__(self, stream):
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        try:
            for raw in stream:
                self.lines.put(raw.decode() if isinstance(raw, bytes) else raw)
        except (OSError, ValueError):
            pass

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first line (since the last call) containing `text`; fails after `timeout`."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if text in line:
                    self.seen.remove(line)
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"no line with {text!r} in {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 1.0)))
            except queue.Empty:
                pass


def open_stream(srv, path):
    request = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}{path}")
    return urllib.request.urlopen(request, timeout=60)


def watch(srv, yizhan_bin, *args):
    proc = subprocess.Popen([str(yizhan_bin), "watch", "--config", str(srv.config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def raw_transaction(srv, verb, rcpt, subject):
    """`verb` FROM, one RCPT, DATA; returns (rcpt code, final code and text)."""
    c = srv.raw()
    c.expect("HELO client.test.example", 250)
    c.expect(f"{verb} FROM:<{SENDER}>", 250)
    code, lines = c.cmd(f"RCPT TO:<{rcpt}>")
    if code != 250:
        c.expect("QUIT", 221)
        return code, None
    c.expect("DATA", 354)
    c.send(f"Subject: {subject}\r\n\r\nhello {subject}\r\n.\r\n".encode())
    final = c.reply()
    c.expect("QUIT", 221)
    return code, final


def test_live_sessions_deliveries_and_the_event_stream(server_factory, yizhan_bin):
    srv = server_factory()
    events = Lines(open_stream(srv, "/api/events"))
    watcher, watched, _ = watch(srv, yizhan_bin, "--json")
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.ehlo("live.client.example")
            s.mail(SENDER)
            s.noop()

            def listed():
                sessions = json.loads(get(srv, "/api/sessions")[1])["sessions"]
                return sessions[0] if sessions and sessions[0]["command"] == "NOOP" else None

            session = wait_until(listed, 20, "the session listed with its last command")
            assert session["helo"] == "live.client.example", session
            assert session["listener"] == "smtp" and session["commands"] == 3, session
            s.rset()
            s.sendmail(SENDER, [USER], b"Subject: live\r\n\r\nx\r\n")
        srv.wait_mail(USER)
        events.wait_for("event: accepted")
        delivered = events.wait_for('"outcome":"delivered"')
        assert USER in delivered
        line = json.loads(watched.wait_for('"delivery"'))
        assert line["recipient"] == USER and line["outcome"] == "delivered", line
        gone = json.loads(watched.wait_for('"disconnect"'))
        assert gone["type"] == "session" and gone["reason"], gone
        log = json.loads(get(srv, f"/api/deliveries?address={USER}")[1])["deliveries"]
        assert log[0]["queue_id"] and log[0]["outcome"] == "delivered", log
        assert json.loads(get(srv, "/api/deliveries?address=nobody@")[1])["deliveries"] == []
        wait_until(lambda: json.loads(get(srv, "/api/sessions")[1])["sessions"] == [], 20,
                   "the session gone from the list")
        config = json.loads(get(srv, "/api/config")[1])
        assert any(line.startswith("hostname: mx.test.example") for line in config["summary"])
        assert config["admin"]["token"] == "none (loopback only)"
        # NOOP, RSET and QUIT are counted like every other command.
        _, text = get(srv, "/metrics")
        for verb in ("NOOP", "RSET", "QUIT"):
            assert f'yizhan_smtp_commands_total{{verb="{verb}"}}' in text, verb
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_send_soml_saml_reach_the_users_terminal(server_factory, yizhan_bin):
    srv = server_factory()
    # No terminal: SEND is 450 (RFC 821 "user not active"), SOML goes to the mailbox.
    assert raw_transaction(srv, "SEND", USER, "nobody home")[0] == 450
    assert raw_transaction(srv, "SOML", USER, "to the box")[1][0] == 250
    srv.wait_mail(USER, 1)

    terminal, shown, said = watch(srv, yizhan_bin, "--user", USER)
    try:
        said.wait_for(f"this is {USER}'s terminal")
        code, (final, text) = raw_transaction(srv, "SEND", USER, "lunch")
        assert code == 250 and final == 250, text
        assert "shown on the user's terminal" in text[-1], text
        shown.wait_for(f"Message from {SENDER} (SEND)")
        shown.wait_for("hello lunch")
        # SOML with a terminal: the terminal only. SAML: the terminal and the mailbox.
        raw_transaction(srv, "SOML", USER, "soml shown")
        shown.wait_for("hello soml shown")
        raw_transaction(srv, "SAML", USER, "saml both")
        shown.wait_for("hello saml both")
        srv.wait_mail(USER, 2)
        bodies = [p.read_bytes() for p in srv.maildir(USER)]
        assert not any(b"lunch" in b or b"soml shown" in b for b in bodies), bodies
        assert any(b"saml both" in b for b in bodies)
    finally:
        terminal.terminate()
        terminal.wait(10)
    wait_until(lambda: "terminal closed" in srv.log() or None, 20, "the terminal closed")
    assert raw_transaction(srv, "SEND", USER, "gone again")[0] == 450


def test_the_consoles_terminal_stream(server_factory):
    srv = server_factory()
    stream = Lines(open_stream(srv, f"/api/terminal?user={USER}"))
    stream.wait_for("event: open")
    code, (final, _) = raw_transaction(srv, "SEND", USER, "via the console")
    assert (code, final) == (250, 250)
    message = stream.wait_for('"verb":"SEND"')
    assert "hello via the console" in message and SENDER in message, message


def terminal_user_config(yizhan_bin, tmp_path, password):
    """A mailbox with a password, and an admin token: the user's login opens only their own
    terminal; nothing else passes without the token."""
    (tmp_path / "admin.token").write_text("admin-token-0123456789\n")
    return (f'[[mailbox]]\naddress = "term@test.example"\n'
            f'password = "{hash_password(yizhan_bin, password)}"\n\n'
            f'[admin]\naddress = "127.0.0.1:0"\ntoken_file = "{tmp_path / "admin.token"}"\n')


def basic(address, password):
    return "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()


def test_a_mail_user_opens_their_own_terminal_with_their_password(server_factory, yizhan_bin,
                                                                 tmp_path):
    srv = server_factory(extra=terminal_user_config(yizhan_bin, tmp_path, "s3cret"))

    def terminal(user, authorization):
        request = urllib.request.Request(
            f"http://127.0.0.1:{srv.admin_port}/api/terminal?user={user}")
        request.add_header("Authorization", authorization)
        return urllib.request.urlopen(request, timeout=60)

    for user, authorization, status in [
        ("term@test.example", basic("term@test.example", "wrong"), 403),
        ("user@test.example", basic("term@test.example", "s3cret"), 403),
        ("term@test.example", "Bearer not-the-token", 401),
    ]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            terminal(user, authorization)
        assert refused.value.code == status, (user, authorization)
    with pytest.raises(urllib.error.HTTPError) as queue_refused:
        get(srv, "/api/queue", token=None)
    assert queue_refused.value.code == 401, "Basic opens the terminal, nothing else"
    stream = Lines(terminal("term@test.example", basic("TERM@test.example", "s3cret")))
    stream.wait_for("event: open")
    code, (final, _) = raw_transaction(srv, "SEND", "term@test.example", "for term")
    assert (code, final) == (250, 250)
    assert "hello for term" in stream.wait_for('"verb":"SEND"')


def test_requeue_and_bounce_by_filter(server_factory, yizhan_bin):
    dns = TestDns({"far.example": [("RCODE", "SERVFAIL")]})
    try:
        extra = f'[delivery]\ndns_servers = ["127.0.0.1:{dns.port}"]\n'
        srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]}, extra=extra)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail(USER, ["a@far.example"], b"Subject: one\r\n\r\nx\r\n")
            s.sendmail(USER, ["b@far.example"], b"Subject: two\r\n\r\nx\r\n")

        def deferred():
            page = json.loads(get(srv, "/api/queue?state=deferred")[1])
            return page if page["total"] == 2 else None

        page = wait_until(deferred, 30, "both messages deferred")
        assert all(m["recipients"][0]["attempts"] >= 1 for m in page["messages"])
        # Requeue by a filter over the API: attempts forgotten, tried again at once.
        _, acted = get(srv, "/api/queue/actions",
                       body={"action": "requeue", "filter": {"recipient": "a@far"}})
        acted = json.loads(acted)
        assert acted["messages"] == 1 and acted["errors"] == [], acted
        assert "requeued by the operator" in srv.log()
        # Bounce by a filter with the CLI: the sender (local) gets a failure report.
        done = subprocess.run([str(yizhan_bin), "queue", "--config", str(srv.config), "bounce",
                               "--destination", "far.example", "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        bounced = json.loads(done.stdout)
        assert bounced["messages"] == 2 and bounced["recipients"] == 2, bounced
        for report in srv.wait_mail(USER, 2):
            text = report.read_text(errors="replace")
            assert "Status: 5.3.0" in text, text
            assert "returned to the sender by the mail system's operator" in text, text
        wait_until(lambda: srv.spool_empty() or None, 30, "the queue empty")
        # A selection that needs naming.
        done = subprocess.run([str(yizhan_bin), "queue", "--config", str(srv.config), "hold"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "which messages?" in done.stderr, done.stderr
    finally:
        dns.stop()


def test_a_terminal_that_does_not_answer_never_swallows_mail(server_factory):
    """A terminal that takes messages but never says it showed them (a stopped `yizhan
    watch`): after two seconds, SOML and SEND go to the mailbox."""
    import socket as socket_
    srv = server_factory()
    stalled = socket_.socket(socket_.AF_UNIX, socket_.SOCK_STREAM)
    stalled.connect(str(srv.data_dir / "control.sock"))
    stalled.sendall(json.dumps({"op": "watch", "user": USER}).encode() + b"\n")
    assert b'"watching"' in stalled.recv(4096)
    try:
        for verb in ("SOML", "SEND"):
            code, (final, text) = raw_transaction(srv, verb, USER, f"{verb} stalled")
            assert (code, final) == (250, 250), text
            assert "queued as" in text[-1], text
        paths = srv.wait_mail(USER, 2)
        bodies = b"".join(p.read_bytes() for p in paths)
        assert b"hello SOML stalled" in bodies and b"hello SEND stalled" in bodies
        assert "the user's terminal did not take the message" in srv.log()
    finally:
        stalled.close()


def test_pages_of_other_sites_are_refused(server_factory):
    srv = server_factory()
    for site, status in (("cross-site", 403), ("same-site", 403)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{srv.admin_port}/api/terminal?user={USER}")
        request.add_header("Sec-Fetch-Site", site)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=IO_TIMEOUT)
        assert refused.value.code == status
    request = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}/api/queue")
    request.add_header("Sec-Fetch-Site", "same-origin")
    assert urllib.request.urlopen(request, timeout=IO_TIMEOUT).status == 200
    # The console's page may be reached from a link on another site.
    request = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}/")
    request.add_header("Sec-Fetch-Site", "cross-site")
    assert urllib.request.urlopen(request, timeout=IO_TIMEOUT).status == 200


def test_empty_filters_select_nothing(server_factory, yizhan_bin):
    srv = server_factory()
    done = subprocess.run([str(yizhan_bin), "queue", "--config", str(srv.config), "delete",
                           "--recipient", ""], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "the recipient filter is empty" in done.stderr, done.stderr
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(srv, "/api/queue/actions", body={"action": "delete", "filter": {"sender": ""}})
    assert bad.value.code == 400
