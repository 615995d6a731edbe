"""The admin HTTP listener (issue #15): Prometheus metrics after a known workload, the queue
as JSON with filters, the bearer token, and the refusal of an unguarded public address."""

import json
import smtplib
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import IO_TIMEOUT, wait_until
from outbound_helpers import TestDns


def get(srv, path, token=None, body=None, host=None):
    """GET `path` (POST when `body`, a dict sent as JSON) from the admin listener."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if host:
        request.add_header("Host", host)
    with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as answer:
        return answer.status, answer.read().decode()


def metric(text, name, **labels):
    """The value of one series (labels as given, in any order), 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_count_a_known_workload(server_factory):
    srv = server_factory()
    assert srv.admin_port, srv.log()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("a@client.example", ["user@test.example"], b"Subject: 1\r\n\r\none\r\n")
        s.sendmail("a@client.example", ["user2@test.example"], b"Subject: 2\r\n\r\ntwo\r\n")
        code, _ = s.rcpt("nobody@test.example") if s.mail("a@client.example")[0] == 250 else (0, 0)
        assert code == 550
    srv.wait_mail("user@test.example")
    srv.wait_mail("user2@test.example")

    def delivered():
        _, text = get(srv, "/metrics")
        return metric(text, "yizhan_deliveries_total", outcome="delivered", kind="local") >= 2

    wait_until(delivered, 30, what="two local deliveries counted")
    status, text = get(srv, "/metrics")
    assert status == 200
    assert metric(text, "yizhan_messages_accepted_total", origin="smtp") == 2, text
    assert metric(text, "yizhan_message_bytes_total") > 0
    assert metric(text, "yizhan_connections_total", listener="smtp") == 1
    assert metric(text, "yizhan_smtp_replies_total", **{"class": "5xx"}) == 1
    assert metric(text, "yizhan_smtp_replies_total", **{"class": "2xx"}) >= 7
    assert metric(text, "yizhan_smtp_commands_total", verb="RCPT") == 3
    assert metric(text, "yizhan_delivery_latency_seconds_count", kind="local") == 2
    assert metric(text, "yizhan_queue_messages", state="deferred") == 0
    # Group commit: at least the two messages' inserts, each commit timed.
    assert metric(text, "yizhan_spool_commit_batch_size_count") >= 2, text
    assert metric(text, "yizhan_spool_commit_seconds_count", durable="true") >= 1
    assert "# HELP yizhan_deliveries_total" in text
    # The log says which rule refused the recipient, and the reply sent.
    assert 'rule="no such user in a local domain"' in srv.log(), srv.log()
    assert "550 5.1.1" in srv.log()


def test_the_queue_as_json_with_filters(server_factory):
    dns = TestDns({"far.example": [("RCODE", "SERVFAIL")]})
    try:
        extra = f'[delivery]\ndns_servers = ["127.0.0.1:{dns.port}"]\n'
        srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]}, extra=extra)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail("me@test.example", ["you@far.example"], b"Subject: far\r\n\r\nx\r\n")

        def deferred():
            _, body = get(srv, "/api/queue?state=deferred")
            return json.loads(body)["total"] == 1

        wait_until(deferred, 30, what="the message deferred")
        _, body = get(srv, "/api/queue?destination=FAR.example&sender=ME@")
        page = json.loads(body)
        assert page["total"] == 1 and page["offset"] == 0, page
        [message] = page["messages"]
        assert message["recipients"][0]["address"] == "you@far.example"
        assert message["recipients"][0]["attempts"] >= 1
        _, one = get(srv, f"/api/queue/{message['id']}")
        shown = json.loads(one)
        assert shown["message"]["id"] == message["id"]
        assert "Subject: far" in shown["headers"]
        assert "body" not in shown
        assert shown["log"][0]["outcome"] == "deferred", shown["log"]
        with_body = json.loads(get(srv, f"/api/queue/{message['id']}?body=true")[1])
        assert with_body["body"].strip() == "x", with_body

        # Actions on many messages: hold, then release (one unknown id reported, not fatal).
        _, acted = get(srv, "/api/queue/actions",
                       body={"action": "hold", "ids": [message["id"], "f" * 32]})
        acted = json.loads(acted)
        assert acted["messages"] == 1 and len(acted["errors"]) == 1, acted
        assert json.loads(get(srv, "/api/queue?state=held")[1])["total"] == 1
        _, acted = get(srv, "/api/queue/actions", body={"action": "release", "ids": [message["id"]]})
        assert json.loads(acted)["messages"] == 1
        assert json.loads(get(srv, "/api/queue?state=held")[1])["total"] == 0
        with pytest.raises(urllib.error.HTTPError) as bad:
            get(srv, "/api/queue/actions", body={"action": "explode", "ids": []})
        assert bad.value.code == 400
        assert "requeue" in json.loads(bad.value.read())["error"], "the error names the actions"
        assert json.loads(get(srv, "/api/queue?destination=elsewhere.example")[1])["total"] == 0
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(srv, "/api/queue/" + "0" * 32)
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as unknown:
            get(srv, "/api/queue?colour=red")
        assert unknown.value.code == 400
        _, text = get(srv, "/metrics")
        assert metric(text, "yizhan_queue_messages", state="deferred") == 1
        assert metric(text, "yizhan_queue_recipients", destination="far.example") == 1
        assert metric(text, "yizhan_deliveries_total", outcome="deferred", kind="remote",
                      destination="far.example") >= 1
    finally:
        dns.stop()


def test_a_token_guards_every_path(server_factory, tmp_path):
    token = "s3cret-token-0123456789abcdef"
    (tmp_path / "admin.token").write_text(token + "\n")
    srv = server_factory(extra=f'[admin]\naddress = "127.0.0.1:0"\n'
                               f'token_file = "{tmp_path / "admin.token"}"\n')
    for path in ("/metrics", "/api/queue", "/api/health"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(srv, path)
        assert refused.value.code == 401, path
        assert refused.value.headers["WWW-Authenticate"] == "Bearer"
        with pytest.raises(urllib.error.HTTPError):
            get(srv, path, token=token + "x")
        assert get(srv, path, token=token)[0] == 200


def test_a_rebound_dns_name_is_refused_and_reload_works(server_factory):
    """Without a token the listener answers only requests naming a loopback host (a hostile
    page whose name was rebound to 127.0.0.1 sends its own name); reload goes through."""
    srv = server_factory()
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(srv, "/api/health", host=f"evil.example:{srv.admin_port}")
    assert refused.value.code == 403
    assert get(srv, "/api/health", host=f"localhost:{srv.admin_port}")[0] == 200
    status, body = get(srv, "/api/reload", body={})
    assert status == 200 and json.loads(body)["result"] == "reloaded", body
    # A form post (no JSON content type) cannot act: no CSRF through a simple request.
    request = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}/api/queue/actions",
                                     data=b"action=delete", method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    with pytest.raises(urllib.error.HTTPError) as form:
        urllib.request.urlopen(request, timeout=IO_TIMEOUT)
    assert form.value.code == 415


def test_a_public_address_needs_a_token(server_factory, yizhan_bin):
    srv = server_factory(extra='[admin]\naddress = "0.0.0.0:0"\n', start=False)
    done = subprocess.run([str(yizhan_bin), "check-config", "--config", str(srv.config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "admin.address: 0.0.0.0:0 is not a loopback address: set admin.token_file" \
        in done.stderr, done.stderr


def test_admin_can_be_switched_off(server_factory):
    srv = server_factory(extra="[admin]\nenabled = false\n")
    assert srv.admin_port is None
    assert "admin=off" in srv.log()


def test_the_grafana_dashboard_uses_metrics_that_exist():
    """dist/grafana/yizhan.json names only metrics that crates/yizhan-server/src/metrics.rs
    defines (a renamed metric must not leave an empty panel)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    defined = set()
    for source in ("crates/yizhan-server/src/metrics.rs", "crates/yizhan-spool/src/metrics.rs"):
        defined |= set(re.findall(r'"(yizhan_[a-z_]+)"', (root / source).read_text()))
    dashboard = json.loads((root / "dist/grafana/yizhan.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"yizhan_[a-z_]+", target["expr"]):
                used.add(re.sub(r"_(bucket|count|sum)$", "", name))
    assert used and used <= defined, used - defined


def test_json_logs_carry_the_event_fields_and_the_session(yizhan_bin, tmp_path):
    """`--log-format json`: one JSON object per line, the queued event with its queue id and
    the session span (for log shippers)."""
    import socket
    import time
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen([str(yizhan_bin), "--log-format", "json", "serve", "--listen",
                             f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")],
                            stdout=log, stderr=log, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    try:
        for _ in range(100):
            if b'"ready"' in (tmp_path / "log").read_bytes():
                break
            time.sleep(0.1)
        with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT) as s:
            # The queued line is written before the 250: it is in the log once this returns.
            s.sendmail("me@example.org", ["anyone@localhost"], b"Subject: j\r\n\r\nx\r\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    events = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines() if line]
    queued = [e for e in events if e["fields"].get("message") == "queued"]
    assert len(queued) == 1, events[-5:]
    assert len(queued[0]["fields"]["queue_id"]) == 32
    assert queued[0]["span"]["name"] == "session" and queued[0]["span"]["listener"] == "smtp"


def test_a_host_that_cannot_be_reached_is_not_quoted_as_replying(server_factory):
    """A refused connection is our failure to talk to the host, said with the host and
    address tried, never as "host said: ..." (issue #15)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    dns = TestDns({"far.example": [("MX", (10, "mx.far.example"))],
                   "mx.far.example": [("A", "127.0.0.1")]})
    try:
        extra = (f'[delivery]\ndns_servers = ["127.0.0.1:{dns.port}"]\nremote_port = {closed}\n')
        srv = server_factory(smtp={"relay_networks": ["127.0.0.0/8"]}, extra=extra)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail("me@test.example", ["you@far.example"], b"Subject: far\r\n\r\nx\r\n")

        def deferred():
            page = json.loads(get(srv, "/api/queue?state=deferred")[1])
            return page["messages"][0]["recipients"][0]["last_error"] if page["total"] else None

        error = wait_until(deferred, 30, what="the message deferred")
        assert error.startswith(f"cannot talk to mx.far.example [127.0.0.1:{closed}]"), error
        assert "said" not in error and error.count("mx.far.example") == 1, error
    finally:
        dns.stop()
